"""The run directory: what ``lrfb train`` writes and ``lrfb sr``, the benchmark and ``lrfb diagnose`` read.

::

    RUN/config.json       resolved method config + its hash, engine settings, preset, variant
    RUN/env.json          versions, device, git sha, argv, seed, input dataset hashes (+ resumes)
    RUN/log.txt           the log, including a line of loss terms every ``engine.log_every`` steps
    RUN/metrics.csv       long format: stage,step,name,value,time_s (every loss term by name,
                          plus ``img_per_s``; ``step`` counts completed steps within the stage,
                          ``time_s`` is cumulative training time of the run)
    RUN/samples/          PNG grids, rows = fixed faces, columns = genuine LR | regulated LR (when the
                          method has one, e.g. CR's phi_cr) | SR  (the paper's Fig. 5)
    RUN/checkpoints/      NN_STAGE_SSSSSSSS.pt (periodic) and NN_STAGE_done.pt (end of each stage);
                          atomic, readable with ``torch.load(weights_only=True)``
    RUN/final.pt          weights-only export of the deployed nets (:func:`export_final`)
    RUN/parameters.json   parameter counts per net, deployed and trained totals

Weights also travel as safetensors files (:func:`export_safetensors`, the model zoo's format):
tensors ``NET.PARAM`` and string metadata ``format``, ``method``, ``config`` (JSON),
``config_hash``, ``nets`` (JSON list of the nets held) and ``lrfacebench``; they hold no pickle.

A training checkpoint holds ``format``, ``method``, ``config`` (+ ``config_hash``), ``stage``,
``stage_index``, ``step``, ``stage_done``, ``time_s``, ``world_size``, ``state``
(:meth:`Method.state_dict`) and ``rng`` (one :func:`lrfacebench.runtime.rng_state` per process).
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

import lrfacebench
from lrfacebench import config as cfglib
from lrfacebench import io
from lrfacebench.errors import RunError
from lrfacebench.methods import METHODS, Method, get_method
from lrfacebench.pixels import unit_to_signed
from lrfacebench.runtime import resolve_device

log = logging.getLogger(__name__)

FINAL = "final.pt"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FORMAT = 1
SAFETENSORS_FORMAT = "lrfacebench-weights-1"
_CKPT_RE = re.compile(r"^(\d{2})_(.+)_(\d{8}|done)\.pt$")


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def checkpoint_path(run: Path, stage_index: int, stage: str, step: int | None) -> Path:
    """``RUN/checkpoints/NN_STAGE_SSSSSSSS.pt``, or ``NN_STAGE_done.pt`` for ``step=None``."""
    return run / CHECKPOINTS / f"{stage_index:02d}_{stage}_{'done' if step is None else f'{step:08d}'}.pt"


def list_checkpoints(run: Path) -> list[tuple[tuple[int, float], Path]]:
    """Checkpoints of ``run`` as ``((stage_index, step or inf when done), path)``, oldest first."""
    out = []
    for p in (run / CHECKPOINTS).glob("*.pt"):
        m = _CKPT_RE.match(p.name)
        if m:
            out.append(((int(m[1]), math.inf if m[3] == "done" else int(m[3])), p))
    return sorted(out)


def newest_loadable(paths: Sequence[Path]) -> tuple[Path, dict] | None:
    """Newest checkpoint among ``paths`` (given oldest first) that loads; broken ones are logged."""
    for p in reversed(paths):
        try:
            return p, io.load_checkpoint(p)
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to an older one
            log.warning("checkpoint %s cannot be loaded (%s); trying an older one", p, e)
    return None


def save_training_checkpoint(path: Path, method: Method, method_spec: str, stage: str, stage_index: int,
                             step: int, done: bool, time_s: float, rngs: list[dict[str, torch.Tensor]]) -> None:
    """Write one training checkpoint (the format of the module docstring), atomically."""
    io.save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "method": method_spec, "config": cfglib.to_dict(method.config),
        "config_hash": cfglib.config_hash(method.config), "stage": stage, "stage_index": stage_index,
        "step": step, "stage_done": done, "time_s": time_s, "world_size": len(rngs),
        "state": method.state_dict(), "rng": rngs})


def export_final(method: Method, path: str | Path, method_spec: str | None = None) -> None:
    """Write the deployed nets of ``method`` as a weights file (``RUN/final.pt``): what ``lrfb sr``
    and the benchmark load. ``method_spec`` is how the method is named for loading it again
    (default ``method.name``); only a registered name loads again (:func:`registered_name`)."""
    io.save_checkpoint(path, {
        "method": method_spec or method.name, "config": cfglib.to_dict(method.config),
        "config_hash": cfglib.config_hash(method.config), "nets": method.deployed_state_dict(),
        "deployed": list(method.deployed), "lrfacebench": lrfacebench.__version__})


def export_safetensors(method: Method, path: str | Path, method_spec: str | None = None,
                       nets: Sequence[str] | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write ``nets`` of ``method`` (default: the deployed ones) as a safetensors file, floating
    tensors cast to ``dtype`` (non-floating ones, e.g. batch-norm counters, kept); loading casts
    them back to the nets' own dtype. The format is in the module docstring."""
    nets = list(method.deployed if nets is None else nets)
    tensors = {f"{net}.{k}": (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous().clone()
               for net in nets for k, v in method.nets[net].state_dict().items()}
    io.save_tensors(path, tensors, {
        "format": SAFETENSORS_FORMAT, "method": method_spec or method.name,
        "config": json.dumps(cfglib.to_dict(method.config), sort_keys=True),
        "config_hash": cfglib.config_hash(method.config), "nets": json.dumps(nets),
        "lrfacebench": lrfacebench.__version__})


def safetensors_state(data: bytes, source: str | Path) -> dict[str, Any]:
    """The bytes of a file written by :func:`export_safetensors` as a weights export
    (``method``, ``config``, ``config_hash``, ``nets`` -> {net: state dict}); :class:`RunError`
    for a pickle or any file that is not one (nothing in it is executed)."""
    try:
        tensors, meta = io.load_tensors(data, source)
    except ValueError as e:
        raise RunError(str(e)) from None
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise RunError(f"{source} is a safetensors file but not lrfacebench weights "
                       f"(format {meta.get('format')!r}, expected {SAFETENSORS_FORMAT!r})")
    try:
        nets: dict[str, dict[str, torch.Tensor]] = {net: {} for net in json.loads(meta["nets"])}
        for key, value in tensors.items():
            net, _, param = key.partition(".")
            nets[net][param] = value
        return {"method": meta["method"], "config": json.loads(meta["config"]),
                "config_hash": meta.get("config_hash", ""), "nets": nets}
    except (KeyError, ValueError, TypeError) as e:
        raise RunError(f"{source}: malformed lrfacebench weights metadata ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
def write_run_config(run: Path, config: dict[str, Any]) -> None:
    """``RUN/config.json`` (method, preset, variant, config, config_hash, engine), plus the
    ``checkpoints/`` and ``samples/`` folders."""
    (run / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (run / "samples").mkdir(exist_ok=True)
    io.write_json(run / "config.json", config)


def record_session(run: Path, session: dict[str, Any], stored_env: dict | None) -> None:
    """``RUN/env.json``: the first session's record (stamped ``started``); a continued run keeps it
    and appends this session to its ``sessions``."""
    session = {**session, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if stored_env is not None:
        stored_env.setdefault("sessions", []).append(session)
    io.write_json(run / "env.json", session if stored_env is None else stored_env)


class MetricsCSV:
    """``metrics.csv`` in long format: ``stage,step,name,value,time_s``, appended and flushed."""

    HEADER = "stage,step,name,value,time_s\n"

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate(self, order: dict[str, int], stage_index: int, step: int) -> None:
        """Drop rows after ``(stage_index, step)`` (a resumed or re-run stage rewrites them)."""
        if not self.path.exists():
            io.write_text(self.path, self.HEADER)
            return
        kept = [self.HEADER]
        for line in self.path.read_text().splitlines()[1:]:
            parts = line.split(",")
            if len(parts) != 5 or parts[0] not in order or not parts[1].isdigit():
                continue  # a half-written last line of a killed run
            if (order[parts[0]], int(parts[1])) <= (stage_index, step):
                kept.append(line + "\n")
        io.write_text(self.path, "".join(kept))

    def write(self, stage: str, step: int, values: dict[str, float], time_s: float) -> None:
        with open(self.path, "a") as f:
            f.writelines(f"{stage},{step},{k},{v:.6g},{time_s:.2f}\n" for k, v in values.items())


def train_seconds(run: Path) -> float:
    """Cumulative training time of a run: the largest ``time_s`` of its ``metrics.csv``."""
    times = pd.read_csv(run / "metrics.csv")["time_s"]
    return float(times.max()) if len(times) else 0.0


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def build_method(name: str, config: dict[str, Any], device: torch.device | str) -> Method:
    """The registered method ``name`` built from a stored config dict (a name read from a file
    never imports anything outside the registry: :func:`registered_name`)."""
    cls = get_method(name)
    return cls(cfglib.from_dict(cls.Config, config), device)


def registered_name(name: Any, source: str | Path) -> str:
    """``name`` when it is a registered method name (``lrfb methods``); :class:`RunError` otherwise,
    before anything is imported. Method names read from files (weights, checkpoints, run records)
    go through here: a file must never choose which module is imported."""
    if isinstance(name, str) and name in METHODS:
        return name
    raise RunError(f"{source} names method {str(name)[:80]!r}, which is not registered; files may "
                   f"only name registered methods ({', '.join(sorted(METHODS))})")


def load_method(path: str | Path, device: torch.device | str = "cpu", nets: str = "deployed") -> Method:
    """A ready-to-use Method in eval mode from a run directory, ``final.pt``, a checkpoint or a
    ``.safetensors`` weights file (:func:`export_safetensors`; zoo names: :mod:`lrfacebench.zoo`).

    A method that needs no training (``bicubic``) may be given by name. Only registered methods
    are loaded: a file naming ``module:Class`` or any unknown name is refused before any import
    (:func:`registered_name`). For a run directory,
    ``nets="deployed"`` reads ``final.pt`` (or, while the run is unfinished, its newest
    checkpoint); ``nets="all"`` reads the newest checkpoint, e.g. for CR's phi_fr.
    Raises :class:`~lrfacebench.errors.RunError` for anything that cannot be loaded.
    """
    device = resolve_device(device)
    p = Path(path)
    if not p.exists():
        if str(path) in METHODS:
            cls = get_method(str(path))
            method = cls(cls.make_config("paper"), device)
            if method.stages():
                raise RunError(f"method {path!r} needs trained weights: give a run directory, "
                               "its final.pt, a checkpoint or a zoo name (`lrfb zoo list`)")
            return method.eval()
        raise RunError(f"{path}: no such run directory, weights file or registered method name")
    if p.is_dir() and not (nets == "deployed" and (p / FINAL).is_file()):
        found = newest_loadable([c for _, c in list_checkpoints(p)])
        if found is None:
            raise RunError(f"{p}: no {FINAL} and no checkpoint (not a finished run?)")
        p, state = found
        log.info("loading %s", p)
    elif p.suffix == ".safetensors":
        state = safetensors_state(p.read_bytes(), p)
    else:
        p = p / FINAL if p.is_dir() else p
        try:
            state = io.load_checkpoint(p)
        except Exception as e:  # noqa: BLE001 - any undecodable file is a user error here
            raise RunError(f"{p} cannot be read as lrfacebench weights ({_one_line(e)})") from None
    return method_from_state(state, p, device)


def method_from_state(state: Any, source: str | Path, device: torch.device | str) -> Method:
    """The method in eval mode of a loaded checkpoint, weights export or safetensors state
    (:func:`safetensors_state`); the method name goes through :func:`registered_name` first.
    A state holding only some nets (a zoo recogniser) loads those; the others keep their
    initialisation. :class:`RunError` for anything that does not fit."""
    if not isinstance(state, dict) or "method" not in state or "config" not in state:
        raise RunError(f"{source} is not a lrfacebench checkpoint or weights export")
    name = registered_name(state["method"], source)
    try:
        method = build_method(name, state["config"], device)
        if "state" in state:  # a training checkpoint
            state = state["state"]
        method.load_state_dict({"nets": state["nets"], "extra": state.get("extra", {})})
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise RunError(f"{source} does not hold weights of method {name!r} "
                       f"({type(e).__name__}: {_one_line(e)})") from None
    return method.eval()


def _one_line(error: Exception, limit: int = 300) -> str:
    """``error``'s message on one line, cut to ``limit`` characters (torch's are multi-line)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def split_net_spec(spec: str, default_net: str = "phi_fr") -> tuple[str, str]:
    """``RUN[:NET]`` -> ``(RUN, NET)``; NET defaults to ``default_net`` (a ``:`` followed by a path
    separator belongs to RUN, e.g. a Windows drive)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail and not any(c in tail for c in "/\\"):
        return head, tail
    return spec, default_net


def load_recognizer(spec: str, device: str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """``embed``: ``(N,3,64,64)`` float in [0,1] -> ``(N,D)`` features of a recognition net trained
    inside a run, ``spec = RUN[:NET]`` (NET defaults to ``phi_fr``).

    The run's newest checkpoint (all nets, not only the deployed ones) is loaded. The recognition
    nets lrfacebench trains (CR's phi_fr, a CentreFace) take faces in [-1,1] and expose their
    fc5 features as ``.embed``; a net without ``.embed`` is called as it is.
    """
    run, net_name = split_net_spec(spec)
    return recognizer_embed(load_method(run, device, nets="all"), net_name, run)


def load_net_state(spec: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The state dict of net NET of a run's newest checkpoint, ``spec = RUN[:NET]`` (NET defaults
    to ``phi_fr``): what :meth:`Method.external_nets` names. :class:`RunError` if it has none."""
    run, net_name = split_net_spec(spec)
    return _net(load_method(run, device, nets="all"), net_name, run).state_dict()


def _net(method: Method, net_name: str, source: str | Path) -> torch.nn.Module:
    """Net ``net_name`` of ``method`` (loaded from ``source``); :class:`RunError` if it has none."""
    if net_name not in method.nets:
        raise RunError(f"{source}: method {method.name!r} has no net {net_name!r}; "
                       f"nets: {', '.join(sorted(method.nets))}")
    return method.nets[net_name]


def recognizer_embed(method: Method, net_name: str, source: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """``embed`` of net ``net_name`` of a loaded ``method`` (see :func:`load_recognizer`)."""
    net = _net(method, net_name, source).eval()
    forward = getattr(net, "embed", net)
    dev = next(net.parameters()).device

    def embed(x: torch.Tensor) -> torch.Tensor:
        return forward(unit_to_signed(x.to(dev)))

    return embed
