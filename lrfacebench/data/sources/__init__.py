"""Readers for the official layouts of PIPA, DukeMTMC, WIDER FACE, CelebA, Helen, TinyFace,
QMUL-SurvFace, folders and video.

Each reader module defines ``KIND`` (``"genuine"`` LR faces found in photos/frames, or
``"paired"`` HR/LR sets), an ``Options`` dataclass (the ``[source]`` table of a recipe) and
``scan(root, options) -> Scan``. A paired reader may also define ``RULE``: an
:class:`~lrfacebench.data.sources.base.LrRule` (its LR faces are made by that rule instead of
``DS(HR)``) or a :class:`~lrfacebench.data.sources.base.SceneRule` (its ``scene`` items are
shrunk photos whose detected faces are paired with HR from the original), either with extra
manifest columns. A reader of pre-cropped faces defines ``CROPPED``: one sentence for the data
card on how its faces and identities are taken (instead of the detector's). A reader may also give
verification pairs of its items (``Scan.pairs``, written to ``pairs.csv``). Modules are imported
only when used.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lrfacebench.data.sources.base import LrRule, SceneRule

SOURCES: dict[str, str] = {
    name: f"lrfacebench.data.sources.{name}"
    for name in ("pipa", "dukemtmc", "widerface", "tinyface", "survface", "celeba", "helen", "folder", "video",
                 "sample", "degraded", "degraded_scenes")
}


def get_source(name: str) -> ModuleType:
    """The reader module of source ``name``; ``ValueError`` lists the known names."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[name])


def rule(name: str) -> "LrRule | SceneRule | None":
    """The ``RULE`` of source ``name``, or ``None`` (paired sets: LR = ``DS(HR)``)."""
    return getattr(get_source(name), "RULE", None)


def cropped(name: str) -> str:
    """The ``CROPPED`` sentence of source ``name`` (its faces are the images themselves), or ``""``."""
    return getattr(get_source(name), "CROPPED", "")
