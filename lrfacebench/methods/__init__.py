"""Explicit method registry: name -> "module:Class", imported lazily (no import-time scanning).

Adding a method is one new module plus one line here.
"""
from __future__ import annotations

import importlib

from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage

METHODS: dict[str, str] = {
    "bicubic": "lrfacebench.methods.trivial:Bicubic",
    "nearest": "lrfacebench.methods.trivial:Nearest",
    "bicubic_noise": "lrfacebench.methods.trivial:BicubicNoise",
    "cr": "lrfacebench.methods.cr:CR",
    "vdsr": "lrfacebench.baselines.vdsr:VDSR",
    "srgan": "lrfacebench.baselines.srgan:SRGAN",
    "cyclegan": "lrfacebench.baselines.cyclegan:CycleGAN",
    "lrgan": "lrfacebench.baselines.lrgan:LRGAN",
}


def get_method(name: str) -> type[Method]:
    """The Method class registered as ``name``; ``ValueError`` listing the choices otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["Batch", "Method", "MethodConfig", "Stage", "METHODS", "get_method"]
