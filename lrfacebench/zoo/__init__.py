"""The model zoo: trained weights of the methods, shipped inside the package, each with a model card.

::

    lrfacebench/zoo/models/STEM.safetensors   the nets (:func:`lrfacebench.runs.export_safetensors`):
                                              an SR method's deployed nets, or a recogniser's net
    lrfacebench/zoo/models/STEM.json          the entry and its model card: name, method, kind, net,
                                              weights, sha256, then data, preset, training, metrics...
    lrfacebench/zoo/models/STEM.md            the card rendered (:func:`lrfacebench.zoo.card.render`)

An entry's ``name`` is a method label (``vdsr``, ``cr``, ``cr:wo_cr``; STEM replaces ``:`` by
``-``) or a recogniser's name of ``tables.toml`` (``centreface-independent``); ``kind`` is ``sr``
or ``recognizer``. ``scripts/build_zoo.py`` builds every entry from scratch.

Every load reads the file once, checks its sha256 against the entry (a mismatch is a
:class:`~lrfacebench.weights.WeightError` naming both hashes) and parses those same bytes as
safetensors, which cannot hold code: a pickle is refused, never unpickled. Loading itself is
:func:`lrfacebench.runs.method_from_state`, as for a run's weights.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from lrfacebench import io
from lrfacebench.errors import RunError
from lrfacebench.methods import Method
from lrfacebench.runs import load_method, method_from_state, recognizer_embed, safetensors_state
from lrfacebench.runs import load_recognizer as runs_load_recognizer
from lrfacebench.weights import WeightError, WeightFile, read_verified
from lrfacebench.zoo.card import render

MODELS_DIR = Path(__file__).resolve().with_name("models")
KINDS = ("sr", "recognizer")


@dataclass(frozen=True)
class Entry:
    """One zoo model: what :func:`load` needs (the rest of :attr:`card` is for readers)."""

    name: str
    method: str  # registered method name
    kind: str  # "sr" or "recognizer"
    net: str  # recognizer: the net whose ``embed`` gives features; "" for sr
    path: Path  # the safetensors file
    sha256: str
    card: dict[str, Any] = field(repr=False, compare=False)

    def weight_file(self) -> WeightFile:
        """The file as a :class:`WeightFile`, so it is checked like every other weight file."""
        return WeightFile(name=f"zoo:{self.name}", purpose=f"zoo weights of {self.method}", sha256=self.sha256,
                          candidates=lambda: [self.path],
                          how_to_get=f"reinstall lrfacebench, or rebuild it: python scripts/build_zoo.py "
                                     f"--only {self.name}")


def stem(name: str) -> str:
    """File stem of entry ``name`` (``cr:wo_cr`` -> ``cr-wo_cr``)."""
    return name.replace(":", "-")


def card_path(name: str, root: Path | None = None) -> Path:
    return (root or MODELS_DIR) / f"{stem(name)}.json"


def entries(root: Path | None = None) -> dict[str, Entry]:
    """Every entry of the zoo folder (default :data:`MODELS_DIR`), by name."""
    root = root or MODELS_DIR
    out = {}
    for p in sorted(root.glob("*.json")):
        card = json.loads(p.read_text())
        if card.get("kind") not in KINDS:
            raise RunError(f"{p}: kind {card.get('kind')!r} is not one of {KINDS}")
        out[card["name"]] = Entry(card["name"], card["method"], card["kind"], card.get("net", ""),
                                  root / card["weights"], card["sha256"], card)
    return out


def entry(name: str, kind: str | None = None) -> Entry:
    """The entry ``name`` (of ``kind``, when given); :class:`RunError` listing the zoo otherwise."""
    found = entries().get(name)
    if found is None or (kind and found.kind != kind):
        names = [e.name for e in entries().values() if not kind or e.kind == kind]
        raise RunError(f"no zoo {kind or 'model'} named {name!r}; the zoo has: {', '.join(names) or 'nothing'} "
                       "(`lrfb zoo list`)")
    return found


def has(name: str, kind: str | None = None) -> bool:
    e = entries().get(name)
    return e is not None and (kind is None or e.kind == kind)


def state(e: Entry) -> dict[str, Any]:
    """The weights export of ``e`` (``method``, ``config``, ``config_hash``, ``nets``) after the
    sha256 check; :class:`WeightError` on a hash mismatch, :class:`RunError` for a pickle or a
    file that names another method than the entry."""
    path, data = read_verified(e.weight_file())
    st = safetensors_state(data, path)
    if st["method"] != e.method:
        raise RunError(f"{path} holds weights of {st['method']!r}, but zoo entry {e.name!r} is {e.method!r}")
    return st


def load(name: str, device: torch.device | str = "cpu") -> Method:
    """The zoo model ``name`` in eval mode (a recogniser: the method with only its net loaded)."""
    e = entry(name)
    return method_from_state(state(e), e.path, device)


def load_weights(spec: str | Path, device: torch.device | str = "cpu") -> Method:
    """What ``lrfb sr WEIGHTS`` loads: an existing path (run directory, weights file) first, else
    the zoo model of that name (``cr`` means the zoo's CR), else a method that needs no training
    (``bicubic``): :func:`lrfacebench.runs.load_method`."""
    if not Path(spec).exists() and has(str(spec), "sr"):
        return load(str(spec), device)
    return load_method(spec, device)


def recognizer(name: str, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """``embed``: ``(N,3,64,64)`` float in [0,1] -> ``(N,D)`` features of the zoo recogniser ``name``."""
    e = entry(name, "recognizer")
    return recognizer_embed(load(name, device), e.net, e.path)


def load_recognizer(spec: str, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """What ``--recognizer SPEC`` loads: a zoo recogniser's name (``centreface-independent``), unless
    a path of that name exists, else ``RUN[:NET]`` (:func:`lrfacebench.runs.load_recognizer`)."""
    if not Path(spec).exists() and has(spec, "recognizer"):
        return recognizer(spec, device)
    return runs_load_recognizer(spec, str(device))


def init_nets(method: Method, name: str) -> Entry:
    """Load the nets of zoo model ``name`` into ``method`` (a fine-tuning start: the other nets
    and the optimisers keep their state); :class:`RunError` when they do not fit its config."""
    e = entry(name)
    st = state(e)
    if st["method"] != method.name:
        raise RunError(f"zoo model {name!r} is {st['method']!r}, not {method.name!r}")
    try:
        method.load_state_dict({"nets": st["nets"]})
    except (KeyError, RuntimeError) as err:
        raise RunError(f"zoo model {name!r} (config {st['config_hash'][:12]}, preset "
                       f"{e.card.get('preset')}) does not fit this config: train with its preset or config "
                       f"({' '.join(str(err).split())[:300]})") from None
    return e


def verify(root: Path | None = None) -> list[tuple[str, bool, str]]:
    """``(name, ok, status)`` of every entry: hash checked and weights loaded on the CPU."""
    out = []
    for name, e in entries(root).items():
        try:
            method_from_state(state(e), e.path, "cpu")
            out.append((name, True, f"sha256 {e.sha256[:12]}…, {e.path.stat().st_size / 1e6:.1f} MB, loads"))
        except (WeightError, RunError) as err:
            out.append((name, False, str(err)))
    return out


def write_entry(card: dict[str, Any], root: Path | None = None) -> Path:
    """Write the card of an entry (``STEM.json``) and its rendering (``STEM.md``); returns the JSON."""
    path = card_path(card["name"], root)
    io.write_json(path, card)
    io.write_text(path.with_suffix(".md"), render(card))
    return path
