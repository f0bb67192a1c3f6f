"""The library's own errors: ``ValueError`` subclasses whose message says what is wrong and what to do.

``param`` names the argument at fault (``hr``, ``out``, ``seed``, ``device``, ...) when there is
one; the message then starts with the offending value, and the command line puts the option in
front of it (``--hr /data/x: not a folder``). Only :mod:`lrfacebench.cli` turns these errors into
click errors; the library never imports click.
"""
from __future__ import annotations


class LrfbError(ValueError):
    """An input or a state the library cannot work with; ``param`` is the argument at fault, if any."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class DatasetError(LrfbError):
    """A dataset folder that cannot be used as asked; the message says what was expected."""


class BuildError(LrfbError):
    """A dataset build that cannot proceed as asked (an occupied output folder, unwritable files)."""


class TrainError(LrfbError):
    """A training run that cannot proceed as asked; the message says why and what to do."""


class RunError(LrfbError):
    """A run directory, weights file or method name that cannot be loaded as asked."""


class DiagnoseError(LrfbError):
    """A run directory that cannot be diagnosed; the message says why."""
