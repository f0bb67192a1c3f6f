"""Configs are data: dataclasses filled from presets, TOML/JSON files and ``key=value`` overrides.

A resolved config is snapshotted as JSON with its hash into every run directory, so a
leaderboard row can be traced back to it and re-run.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from lrfacebench.io import sha256_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

C = TypeVar("C")


def parse_toml(text: str) -> dict[str, Any]:
    """A TOML document (a recipe, the benchmark's table specs) as a dict."""
    return tomllib.loads(text)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.toml`` or ``.json`` config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        if path.suffix == ".toml":
            with open(path, "rb") as f:
                return tomllib.load(f)
        if path.suffix == ".json":
            return json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError too
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {e}") from None
    raise ValueError(f"config file must be .toml or .json, got {path.name}")


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.lr=1e-4", "stages=[1,2]"]`` -> nested dict. Values are parsed as TOML literals
    (numbers, booleans, strings, arrays); anything else is kept as a plain string. No ``eval``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override must look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields.

    Unknown keys and values of the wrong type (:func:`conforms`) raise ``ValueError`` naming
    them (``where`` prefixes the option's dotted path), so a typo never passes silently.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where.rstrip('.') or cls.__name__} must be a table of options, got {data!r:.60}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {sorted(unknown)}; known: {sorted(fields)}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        typ = hints.get(name)
        if dataclasses.is_dataclass(typ) and isinstance(value, Mapping):
            value = from_dict(typ, deep_merge(dataclasses.asdict(getattr(cls(), name)), value),  # type: ignore[arg-type]
                              f"{where}{name}.")
        elif isinstance(value, list) and typ is not None and get_origin(typ) is tuple:
            value = tuple(value)
        if typ is not None and not conforms(value, typ):
            raise ValueError(f"option {where}{name} must be {_type_name(typ)}, got {value!r:.60}")
        kwargs[name] = value
    return cls(**kwargs)


def conforms(value: Any, typ: Any) -> bool:
    """Whether ``value`` (parsed from TOML/JSON) fits the type hint ``typ``: bool, int, float (an
    int fits), str, tuples, lists, dicts, dataclasses and unions of them are checked; any other
    hint is accepted as it is."""
    origin, args = get_origin(typ), get_args(typ)
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if typ is type(None):
        return value is None
    if typ is bool:
        return isinstance(value, bool)
    if typ in (int, float):
        return isinstance(value, (int, float) if typ is float else int) and not isinstance(value, bool)
    if typ is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(typ):
        return isinstance(value, typ)  # type: ignore[arg-type]
    if typ is tuple or origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(conforms(v, a) for v, a in zip(value, args)))
    if typ is list or origin is list:
        return isinstance(value, list) and (not args or all(conforms(v, args[0]) for v in value))
    if typ is dict or origin in (dict, Mapping, collections.abc.Mapping):
        return isinstance(value, Mapping)
    return True


def _type_name(typ: Any) -> str:
    """``float``, ``tuple[float, ...]``, ``str | None``: a type hint as written."""
    name = getattr(typ, "__name__", None) if get_origin(typ) is None else None
    return name or str(typ).replace("typing.", "")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """sha256 of the resolved config (dataclass or dict), stable across key order."""
    return sha256_json(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg)


def resolve(cls: type[C], *layers: Mapping[str, Any]) -> C:
    """Defaults of ``cls`` <- each layer in turn (preset, file, overrides)."""
    data: dict[str, Any] = {}
    for layer in layers:
        data = deep_merge(data, layer)
    return from_dict(cls, deep_merge(dataclasses.asdict(cls()), data))  # type: ignore[call-arg]
