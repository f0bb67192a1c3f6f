"""Readers for the official layouts of PIPA, DukeMTMC, WIDER FACE, CelebA, Helen, folders and video.

Each reader module defines ``KIND`` (``"genuine"`` LR faces found in photos/frames, or
``"paired"`` HR/LR sets), an ``Options`` dataclass (the ``[source]`` table of a recipe) and
``scan(root, options) -> Scan``. Modules are imported only when used.
"""
from __future__ import annotations

import importlib
from types import ModuleType

SOURCES: dict[str, str] = {
    name: f"lrfacebench.data.sources.{name}"
    for name in ("pipa", "dukemtmc", "widerface", "celeba", "helen", "folder", "video", "sample")
}


def get_source(name: str) -> ModuleType:
    """The reader module of source ``name``; ``ValueError`` lists the known names."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[name])
