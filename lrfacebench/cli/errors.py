"""The one place where library errors become click errors.

Every ``lrfb`` command is a :class:`Command` (or belongs to a :class:`Group`): a
:class:`~lrfacebench.errors.LrfbError`, any other ``ValueError``, a missing file or weight file
raised while it runs is shown as a one-line ``Error: ...`` with exit status 1 instead of a
traceback. An error with a ``param`` is prefixed with that option (``--hr /x: not a folder``).
"""
from __future__ import annotations

from typing import Any

import click


def to_click(error: Exception) -> click.ClickException:
    """The click error that shows ``error`` to a user."""
    param = getattr(error, "param", None)
    if param:
        return click.ClickException(f"--{param.replace('_', '-')} {error}")
    return click.ClickException(str(error))


def _library_errors() -> tuple[type[Exception], ...]:
    from lrfacebench.weights import WeightError  # imported when a command runs, not for --help

    return ValueError, FileNotFoundError, WeightError


class Command(click.Command):
    """A command whose library errors are shown as click errors (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _library_errors() as e:
            raise to_click(e) from None


class Group(click.Group):
    """A group whose sub-commands are :class:`Command`\\ s."""

    command_class = Command
