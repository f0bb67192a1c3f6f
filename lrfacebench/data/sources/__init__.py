"""Readers for the official layouts of PIPA, DukeMTMC, WIDER FACE, CelebA, Helen, folders and video.

Each reader module defines ``KIND`` (``"genuine"`` LR faces found in photos/frames, or
``"paired"`` HR/LR sets), an ``Options`` dataclass (the ``[source]`` table of a recipe) and
``scan(root, options) -> Scan``. A paired reader may also define ``LR_RULE``
(:class:`~lrfacebench.data.sources.base.LrRule`): its LR faces are then made by that rule, with
extra manifest columns, instead of ``DS(HR)``. Modules are imported only when used.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lrfacebench.data.sources.base import LrRule

SOURCES: dict[str, str] = {
    name: f"lrfacebench.data.sources.{name}"
    for name in ("pipa", "dukemtmc", "widerface", "celeba", "helen", "folder", "video", "sample",
                 "degraded")
}


def get_source(name: str) -> ModuleType:
    """The reader module of source ``name``; ``ValueError`` lists the known names."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[name])


def lr_rule(name: str) -> "LrRule | None":
    """The ``LR_RULE`` of source ``name``, or ``None`` for ``DS(HR)`` (and genuine-LR sources)."""
    return getattr(get_source(name), "LR_RULE", None)
