"""Explicit method registry: name -> "module:Class", imported lazily (no import-time scanning).

Adding a method is one new module plus one line here. A method of another installed package
registers itself through the entry-point group ``lrfacebench.methods`` (``name =
"package.module:Class"`` in that package's ``pyproject.toml``): installing the package is the
explicit act that makes it loadable; reading the entry points imports nothing. Built-in names
win over plug-ins. :func:`resolve_method` also accepts ``package.module:Class`` of any
:class:`Method` subclass outside the registry, for a spec the user typed (``lrfb train
package.module:Class``) only: names read from files (weights, checkpoints, run records) go
through :func:`get_method`, which imports registered modules only.
"""
from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

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
    "sicnn": "lrfacebench.baselines.sicnn:SICNN",
    "fsrnet": "lrfacebench.baselines.fsrnet:FSRNet",
    "csri": "lrfacebench.baselines.csri:CSRI",
}
PLUGIN_GROUP = "lrfacebench.methods"


def _add_plugins(registry: dict[str, str]) -> None:
    """Add the installed packages' ``lrfacebench.methods`` entry points (name -> "module:Class")
    that do not shadow a built-in name; a malformed one is logged and left out."""
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in registry:
            logging.getLogger(__name__).warning("plug-in method %r (%s) shadows a built-in; ignored",
                                                ep.name, ep.value)
        elif ep.value.count(":") == 1 and all(ep.value.split(":")):
            registry[ep.name] = ep.value
        else:
            logging.getLogger(__name__).warning("plug-in method %r: %r is not 'module:Class'; ignored",
                                                ep.name, ep.value)


_add_plugins(METHODS)


def get_method(name: str) -> type[Method]:
    """The Method class registered as ``name``; ``ValueError`` listing the choices otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def resolve_method(spec: str) -> type[Method]:
    """A registered method name, or ``package.module:Class`` of any Method subclass (imported:
    never call this with a name read from a file)."""
    if spec in METHODS or ":" not in spec:
        return get_method(spec)
    module, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import method {spec!r}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"{spec!r} is not a lrfacebench Method subclass")
    return cls


def describe_methods() -> list[str]:
    """One block per registered method; an unimportable one is listed with its error."""
    lines = []
    for name in METHODS:
        try:
            cls = get_method(name)
        except Exception as e:  # noqa: BLE001 - listing must survive a broken method module
            lines.append(f"{name:<10} unavailable ({type(e).__name__}: {e})")
            continue
        lines.append(f"{name:<10} {cls.summary}")
        lines.append(f"{'':<10} presets: {', '.join(cls.presets)}; variants: {', '.join(cls.variants)}; "
                     f"deployed: {', '.join(cls.deployed) or '-'}")
    return lines


__all__ = ["Batch", "Method", "MethodConfig", "Stage", "METHODS", "PLUGIN_GROUP", "describe_methods",
           "get_method", "resolve_method"]
