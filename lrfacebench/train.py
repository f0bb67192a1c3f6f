"""The training engine: ``lrfb train METHOD`` and ``lrfb methods``, method-agnostic.

It trains any :class:`~lrfacebench.methods.base.Method` (CR, the baselines, or a user's own class
given as ``module:Class``) stage by stage into a run directory::

    RUN/config.json       resolved method config + its hash, engine settings, preset, variant
    RUN/env.json          versions, device, git sha, argv, seed, input dataset hashes (+ resumes)
    RUN/log.txt           the log, including a line of loss terms every ``engine.log_every`` steps
    RUN/metrics.csv       long format: stage,step,name,value,time_s (every loss term by name,
                          plus ``img_per_s``; ``step`` counts completed steps within the stage,
                          ``time_s`` is cumulative training time of the run)
    RUN/samples/          PNG grids, rows = fixed faces, columns = genuine LR | regulated LR (when the
                          method has one, e.g. CR's phi_cr) | SR  (the paper's Fig. 5)
    RUN/checkpoints/      NN_STAGE_SSSSSSSS.pt (periodic, last ``engine.keep_checkpoints`` kept) and
                          NN_STAGE_done.pt (end of each stage); atomic, ``torch.load(weights_only=True)``
    RUN/final.pt          weights-only export of the deployed nets (what ``lrfb sr`` and benchmarks load)
    RUN/parameters.json   parameter counts per net, deployed and trained totals

Torch is imported inside functions so that ``lrfb --help`` stays instant.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import click

from lrfacebench import config as cfglib
from lrfacebench import io

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lrfacebench.data.faces import FaceList, FaceSet
    from lrfacebench.methods.base import Method, MethodConfig, Stage

log = logging.getLogger(__name__)
step_log = logging.getLogger(__name__ + ".steps")  # loss lines: log.txt (+ stderr without a bar)

FINAL = "final.pt"
CHECKPOINTS = "checkpoints"
_CKPT_RE = re.compile(r"^(\d{2})_(.+)_(\d{8}|done)\.pt$")
PRESETS = ("paper", "cpu", "smoke")
SAMPLE = "@sample"  # --hr/--lr value naming the embedded sample's faces
PROBE_FACES = 64  # faces Method.probe measures at sample intervals (each of genuine and artificial)


@dataclass
class EngineConfig:
    """Trainer settings (``-o engine.KEY=VALUE`` or an ``[engine]`` table in ``--config``).

    They do not change what is learned, except ``amp``/``compile`` (numerics on CUDA).
    """

    log_every: int = 50  # metrics.csv / log.txt row every N steps (and the last step of a stage)
    sample_every: int = 2000  # sample grid every N steps (and at the end of each stage)
    checkpoint_every: int = 1000  # periodic checkpoint every N steps (and at the end of each stage)
    keep_checkpoints: int = 2  # periodic checkpoints kept per stage (dropped when the stage ends)
    keep_stage_checkpoints: bool = True  # False: only the newest end-of-stage checkpoint is kept
    # (saves disk; --resume still works, but an earlier stage can no longer be re-run with --stage)
    n_samples: int = 8  # faces (rows) in a sample grid
    amp: str = "bf16"  # CUDA only: "bf16" autocast or "none"
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile every net (in place; state_dict keys unchanged)


def step_context(device: "torch.device", engine: EngineConfig) -> contextlib.AbstractContextManager:
    """What every training step runs under: bf16 autocast on CUDA (``engine.amp``), else nothing."""
    import torch

    if device.type == "cuda" and engine.amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if engine.amp not in ("bf16", "none"):
        raise ValueError(f"engine.amp must be 'bf16' or 'none', got {engine.amp!r}")
    return contextlib.nullcontext()


def prepare_nets(method: "Method", engine: EngineConfig) -> bool:
    """channels_last (CUDA) and ``torch.compile`` (in place) on every net; True if channels_last."""
    import torch

    channels_last = method.device.type == "cuda" and engine.channels_last
    for net in method.nets.values():
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if engine.compile:
            net.compile()
    return channels_last


class TrainError(click.ClickException):
    """A run that cannot proceed as asked; the message says why and what to do."""


@dataclass
class RunSpec:
    """Everything one ``lrfb train`` invocation asks for (the Python API mirrors the CLI)."""

    method: str  # registered name (cr, vdsr, ...) or "module:Class" of a Method subclass
    preset: str | None = None  # None -> "paper", or the run's preset on --resume/--stage
    variant: str | None = None
    config_file: Path | None = None
    overrides: Sequence[str] = ()
    hr: Path | None = None
    lr: Path | None = None
    split: Sequence[str] = ("train",)
    out: Path | None = None
    device: str = "auto"
    seed: int | None = None  # None -> 0, or the run's seed on --resume/--stage
    resume: bool = False
    stage: str | None = None
    deterministic: bool = False
    compile: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        for name in ("config_file", "hr", "lr", "out"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        self.split = tuple(self.split)


# ---------------------------------------------------------------------------------------------
# methods and configs
# ---------------------------------------------------------------------------------------------
def resolve_method(spec: str) -> type["Method"]:
    """A registered method name, or ``package.module:Class`` of any Method subclass."""
    from lrfacebench.methods import METHODS, Method, get_method

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


def _split_layers(config_file: Path | None, overrides: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(method config layers, engine config layers) from a config file and ``-o`` overrides."""
    method_layers, engine_layers = [], []
    for layer in (cfglib.load_file(config_file) if config_file else {}, cfglib.parse_overrides(overrides)):
        layer = dict(layer)
        engine_layers.append(layer.pop("engine", {}))
        method_layers.append(layer)
    return method_layers, engine_layers


# ---------------------------------------------------------------------------------------------
# run directory: checkpoints, metrics
# ---------------------------------------------------------------------------------------------
def _ckpt_name(stage_index: int, stage: str, step: int | None) -> str:
    return f"{stage_index:02d}_{stage}_{'done' if step is None else f'{step:08d}'}.pt"


def list_checkpoints(run: Path) -> list[tuple[tuple[int, float], Path]]:
    """Checkpoints of ``run`` as ``((stage_index, step or inf when done), path)``, oldest first."""
    out = []
    for p in (run / CHECKPOINTS).glob("*.pt"):
        m = _CKPT_RE.match(p.name)
        if m:
            out.append(((int(m[1]), math.inf if m[3] == "done" else int(m[3])), p))
    return sorted(out)


def _newest_loadable(paths: Sequence[Path]) -> tuple[Path, dict] | None:
    """Newest checkpoint among ``paths`` (given oldest first) that loads; broken ones are logged."""
    for p in reversed(paths):
        try:
            return p, io.load_checkpoint(p)
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to an older one
            log.warning("checkpoint %s cannot be loaded (%s); trying an older one", p, e)
    return None


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


# ---------------------------------------------------------------------------------------------
# RNG states as tensors (checkpoints hold tensors, numbers and strings only)
# ---------------------------------------------------------------------------------------------
def rng_state(device: "torch.device") -> dict[str, "torch.Tensor"]:
    import random

    import numpy as np
    import torch

    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
             "numpy_extra": torch.tensor([pos, has_gauss], dtype=torch.int64),
             "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
             "python": torch.tensor(internal, dtype=torch.int64),
             "python_extra": torch.tensor([version, gauss is not None], dtype=torch.int64),
             "python_gauss": torch.tensor([gauss or 0.0], dtype=torch.float64)}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, "torch.Tensor"], device: "torch.device") -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_extra"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"][0])))
    version, has = (int(v) for v in state["python_extra"])
    random.setstate((version, tuple(int(v) for v in state["python"]),
                     float(state["python_gauss"][0]) if has else None))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------------------------------
# distributed: methods stay unaware (gradients averaged in an optimizer pre-step hook)
# ---------------------------------------------------------------------------------------------
def _average(tensors: list["torch.Tensor"], world_size: int) -> None:
    """All-reduce-average ``tensors`` in place, one flat buffer per dtype."""
    import torch
    import torch.distributed as dist

    by_dtype: dict[Any, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= world_size
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def make_distributed(method: "Method", world_size: int) -> None:
    """Keep the replicas of ``method`` identical across ``world_size`` processes.

    Rank 0's parameters and buffers are broadcast once; then every optimizer averages its
    gradients across ranks right before it steps (a ``register_step_pre_hook``), which is what
    DDP computes, without wrapping the nets, so methods need no change. Deviation from DDP: a
    method that clips gradients before ``step()`` clips the local gradients. Floating buffers
    (BatchNorm statistics) are averaged after every step by :func:`sync_buffers`.
    """
    import torch.distributed as dist

    for net in method.nets.values():
        for t in [*net.parameters(), *net.buffers()]:
            dist.broadcast(t.data, 0)

    def hook(opt: Any, args: Any, kwargs: Any) -> None:
        _average([p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None], world_size)

    for opt in method.optimizers.values():
        opt.register_step_pre_hook(hook)


def sync_buffers(method: "Method", world_size: int) -> None:
    bufs = [b for net in method.nets.values() for b in net.buffers() if b.is_floating_point()]
    if bufs:
        _average(bufs, world_size)


def _average_losses(losses: dict[str, float], device: "torch.device", world_size: int) -> dict[str, float]:
    import torch
    import torch.distributed as dist

    keys = sorted(losses)
    t = torch.tensor([losses[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world_size for k, v in zip(keys, t.tolist())}


# ---------------------------------------------------------------------------------------------
# sample grids
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def inference_mode(method: "Method") -> Iterator[None]:
    """Eval mode, no grad and a forked RNG. Afterwards the method gets ``train(mode)`` back (a
    method may track its mode, as CR does) and every module its own previous train/eval flag."""
    import torch

    flags = [(m, m.training) for net in method.nets.values() for m in net.modules()]
    was_training = any(flag for _, flag in flags)
    devices = [method.device] if method.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        method.eval()
        try:
            yield
        finally:
            method.train(was_training)
            for m, flag in flags:
                m.training = flag


def sample_grid(method: "Method", lr: "torch.Tensor", artificial: bool = False,
                hr: "torch.Tensor | None" = None) -> "Any":
    """RGB uint8 ``(H,W,3)`` grid: a row per face of ``lr`` ``(N,3,16,16)`` in [0,1]; columns
    LR | regulated LR (if the method regulates) | SR | HR (if given), LR columns nearest x4."""
    from lrfacebench.bench.figures import grid_array

    with inference_mode(method):
        sr = method.super_resolve(lr, artificial=artificial).float()
        reg = None if artificial else method.regulate(lr)
    cols = [("DS(HR)" if artificial else "genuine LR", lr)]
    if reg is not None:
        cols.append(("regulated", reg))
    cols.append(("SR", sr))
    if hr is not None:
        cols.append(("HR", hr))
    return grid_array(cols)


# ---------------------------------------------------------------------------------------------
# loading trained methods
# ---------------------------------------------------------------------------------------------
def build_method(spec: str, config: dict[str, Any], device: "torch.device | str") -> "Method":
    cls = resolve_method(spec)
    return cls(cfglib.from_dict(cls.Config, config), device)


def load_method(path: str | Path, device: "torch.device | str" = "cpu", nets: str = "deployed") -> "Method":
    """A ready-to-use Method in eval mode from a run directory, ``final.pt`` or a checkpoint.

    A method that needs no training (``bicubic``) may be given by name. For a run directory,
    ``nets="deployed"`` reads ``final.pt`` (or, while the run is unfinished, its newest
    checkpoint); ``nets="all"`` reads the newest checkpoint, e.g. for CR's phi_fr.
    """
    from lrfacebench.methods import METHODS
    from lrfacebench.runtime import resolve_device

    device = resolve_device(device)
    p = Path(path)
    if not p.exists():
        if str(path) in METHODS or ":" in str(path):
            cls = resolve_method(str(path))
            method = cls(cls.make_config("paper"), device)
            if method.stages():
                raise ValueError(f"method {path!r} needs trained weights: give a run directory, "
                                 "its final.pt or a checkpoint")
            return method.eval()
        raise FileNotFoundError(f"{path}: no such run directory, weights file or method name")
    if p.is_dir() and not (nets == "deployed" and (p / FINAL).is_file()):
        found = _newest_loadable([c for _, c in list_checkpoints(p)])
        if found is None:
            raise FileNotFoundError(f"{p}: no {FINAL} and no checkpoint (not a finished run?)")
        p, state = found
        log.info("loading %s", p)
    else:
        p = p / FINAL if p.is_dir() else p
        try:
            state = io.load_checkpoint(p)
        except Exception as e:  # noqa: BLE001 - any undecodable file is a user error here
            raise ValueError(f"{p} cannot be read as lrfacebench weights ({e})") from None
    if not isinstance(state, dict) or "method" not in state or "config" not in state:
        raise ValueError(f"{p} is not a lrfacebench checkpoint or weights export")
    method = build_method(state["method"], state["config"], device)
    if "state" in state:  # a training checkpoint
        state = state["state"]
    method.load_state_dict({"nets": state["nets"], "extra": state.get("extra", {})})
    return method.eval()


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
def default_out(spec: RunSpec, preset: str, variant: str, seed: int) -> Path:
    """``runs/<method>_<variant>_<preset>_<data>_s<seed>`` (BasicSR-like, one name per setting)."""
    name = spec.method.split(":")[-1].lower()
    data = "sample" if spec.hr is None and spec.lr is None else \
        "+".join(Path(d).name for d in (spec.hr, spec.lr) if d is not None)
    return Path("runs") / f"{name}_{variant}_{preset}_{data}_s{seed}"


@dataclass
class Plan:
    """A resolved :class:`RunSpec`: what will be trained, on what, into where."""

    cls: type["Method"]
    config: "MethodConfig"
    config_hash: str
    engine: EngineConfig
    preset: str
    variant: str
    seed: int
    deterministic: bool
    out: Path
    lists: dict[str, "FaceList"]  # "hr" and/or "lr"
    data_info: dict[str, dict]
    stored_env: dict | None  # env.json of the run being continued


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


class Trainer:
    """Runs one :class:`RunSpec`: stages in order, checkpoints, resume, DDP under ``torchrun``."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.method: Method | None = None
        self.run_dir: Path | None = None
        self.deterministic = spec.deterministic

    # ----- set-up --------------------------------------------------------------------------
    def _face_lists(self) -> dict[str, "FaceList"]:
        from lrfacebench.data.faces import list_dataset, list_sample

        s = self.spec
        if s.hr is None and s.lr is None:
            return {"hr": list_sample("hr", s.split), "lr": list_sample("lr", s.split)}
        out = {}
        for kind, folder in (("hr", s.hr), ("lr", s.lr)):
            if folder is not None:
                out[kind] = (list_sample(kind, s.split) if str(folder) == SAMPLE
                             else list_dataset(folder, kind, s.split))
        return out

    def plan(self) -> Plan:
        """Resolve method, config, data and run directory; check them against an existing run.

        Continuing a run (``--resume``/``--stage``) takes its preset, variant, seed, determinism
        and, when no config option is given, its config; anything given must agree with it.
        """
        s = self.spec
        cls = resolve_method(s.method)
        out = s.out or default_out(s, s.preset or "paper", s.variant or "default", s.seed or 0)
        stored_cfg = stored_env = None
        if _non_empty(out):
            if not (s.resume or s.stage or s.dry_run):
                raise TrainError(f"{out} exists and is not empty: pass --resume to continue it, "
                                 "--stage NAME to (re)run one stage, or choose another --out")
            try:
                stored_cfg = json.loads((out / "config.json").read_text())
                stored_env = json.loads((out / "env.json").read_text())
            except (OSError, ValueError) as e:
                raise TrainError(f"{out} is not empty but is not a readable run directory ({e})") from None
            if stored_cfg.get("method") != s.method:
                raise TrainError(f"{out} is a run of {stored_cfg.get('method')!r}, not {s.method!r}")
        old_cfg, old_env = stored_cfg or {}, stored_env or {}
        preset = s.preset or old_cfg.get("preset") or "paper"
        variant = s.variant or old_cfg.get("variant") or "default"
        seed = s.seed if s.seed is not None else old_env.get("seed", 0)

        lists = self._face_lists()
        method_layers, engine_layers = _split_layers(s.config_file, s.overrides)
        if stored_cfg is not None and s.preset is None and s.variant is None and not any(method_layers):
            method_layers = [stored_cfg["config"]]  # continuing a run with its own config
            engine_layers = [stored_cfg.get("engine", {}), *engine_layers]
        if "hr" in lists:  # set by the trainer from the HR data (CentreFace, ...)
            method_layers.append({"n_identities": len(lists["hr"].identities)})
        cfg = cls.make_config(preset, variant, *method_layers)
        engine = cfglib.resolve(EngineConfig, *engine_layers)
        if s.compile:
            engine = dataclasses.replace(engine, compile=True)
        plan = Plan(cls, cfg, cfglib.config_hash(cfg), engine, preset, variant, seed,
                    s.deterministic or bool(old_env.get("deterministic")), out, lists,
                    {k: v.describe() for k, v in lists.items()}, stored_env)
        if stored_cfg is not None and not s.dry_run:
            if stored_cfg.get("config_hash") != plan.config_hash:
                raise TrainError(f"the resolved config (hash {plan.config_hash[:12]}) differs from {out}'s "
                                 f"({str(stored_cfg.get('config_hash'))[:12]}); continue it with its own "
                                 "options (or none), or train into another --out")
            for k, info in plan.data_info.items():
                old = old_env.get("data", {}).get(k, {})
                if old.get("sha256") != info["sha256"]:
                    raise TrainError(f"the {k} faces ({info['source']}) differ from those {out} was "
                                     f"trained on ({old.get('source')})")
            if old_env.get("seed", seed) != seed:
                raise TrainError(f"--seed {seed} differs from the run's seed {old_env['seed']}")
        return plan

    def _check_needs(self, stages: list["Stage"], lists: dict[str, "FaceList"]) -> None:
        for st in stages:
            if {"hr", "identity", "lr_artificial"} & set(st.needs) and "hr" not in lists:
                raise TrainError(f"stage {st.name!r} needs HR faces: pass --hr DIR (a paired set "
                                 "written by `lrfb build-dataset celeba|helen`)")
            if "lr_genuine" in st.needs and "lr" not in lists:
                raise TrainError(f"stage {st.name!r} needs genuine LR faces: pass --lr DIR (a set "
                                 "written by `lrfb build-dataset widerface|pipa|...`)")
            if "identity" in st.needs and not lists["hr"].identities:
                raise TrainError(f"stage {st.name!r} needs identity labels, but the HR set has none")

    def run(self) -> Path:
        """Train; return the run directory (for ``dry_run``, print the plan and return it)."""
        import torch
        import torch.distributed as dist

        from lrfacebench.runtime import DistContext, resolve_device

        try:
            plan = self.plan()
        except ValueError as e:  # unknown method/preset/variant/option, unusable data folder
            raise TrainError(str(e)) from None
        if self.spec.dry_run:
            return self._dry_run(plan)
        ctx = DistContext.from_env()
        device = resolve_device(self.spec.device)  # cuda -> cuda:$LOCAL_RANK under torchrun
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if ctx.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.run_dir, self.deterministic = plan.out, plan.deterministic
        try:
            method = self._build(plan, device, ctx)
            if ctx.world_size > 1:
                dist.barrier()  # every rank has checked the run directory before rank 0 writes it
            if ctx.is_main:
                self._open_run_dir(plan, device, ctx.world_size)
            if ctx.world_size > 1:
                dist.barrier()
            with self._logging(plan.out, ctx.is_main):
                return self._train(plan, method, device, ctx)
        finally:
            if ctx.world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def _dry_run(self, plan: Plan) -> Path:
        method = plan.cls(plan.config, "cpu")
        stages = method.stages()
        click.echo(f"method {self.spec.method} ({plan.cls.summary}); preset {plan.preset}; "
                   f"variant {plan.variant}; seed {plan.seed}")
        click.echo(f"run directory: {plan.out}")
        click.echo(f"config {plan.config_hash[:12]}:")
        click.echo(json.dumps(cfglib.to_dict(plan.config), indent=2, sort_keys=True, default=str))
        click.echo("engine: " + json.dumps(dataclasses.asdict(plan.engine), sort_keys=True))
        for k, info in plan.data_info.items():
            click.echo(f"data {k}: {info['n_faces']} faces, {info['n_identities']} identities, "
                       f"splits {info['splits']}, from {info['source']}")
        click.echo("stages:")
        for i, st in enumerate(stages):
            click.echo(f"  {i + 1}. {st.name}: {st.iterations} iterations, batch {st.batch_size}, "
                       f"needs {', '.join(st.needs)}")
        click.echo("parameters:")
        for k, v in method.parameter_counts().items():
            click.echo(f"  {k:<12} {v:>12,d}  ({v / 1e6:.3f}M)")
        click.echo(f"deployed nets: {', '.join(plan.cls.deployed) or '-'}")
        return plan.out

    def _build(self, plan: Plan, device: "torch.device", ctx: Any) -> "Method":
        """The method, identically initialised on every rank, checked against the data and --stage."""
        import torch

        from lrfacebench.runtime import seed_everything

        seed_everything(plan.seed, plan.deterministic)  # same on every rank: identical initial nets
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not plan.deterministic
        method = plan.cls(plan.config, device)
        names = [st.name for st in method.stages()]
        self._check_needs(method.stages(), plan.lists)
        if self.spec.stage is not None and self.spec.stage not in names:
            raise TrainError(f"{self.spec.method} has no stage {self.spec.stage!r}; its stages: {', '.join(names)}")
        self.method = method
        return method

    def _open_run_dir(self, plan: Plan, device: "torch.device", world_size: int) -> None:
        from lrfacebench.runtime import environment

        out = plan.out
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        io.write_json(out / "config.json", {
            "method": self.spec.method, "preset": plan.preset, "variant": plan.variant,
            "config": cfglib.to_dict(plan.config), "config_hash": plan.config_hash,
            "engine": dataclasses.asdict(plan.engine)})
        session = {**environment(device), "seed": plan.seed, "deterministic": plan.deterministic,
                   "world_size": world_size, "data": plan.data_info,
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if plan.stored_env is None:
            io.write_json(out / "env.json", session)
        else:  # keep the first session's record, add this one
            plan.stored_env.setdefault("sessions", []).append(session)
            io.write_json(out / "env.json", plan.stored_env)

    @contextlib.contextmanager
    def _logging(self, out: Path, is_main: bool) -> Iterator[None]:
        """INFO and loss lines into ``log.txt`` (rank 0) without changing what the console shows;
        loss lines also go to stderr when there is no progress bar and the console shows INFO."""
        root = logging.getLogger()
        level, console = root.level, root.getEffectiveLevel()
        saved = [(h, h.level) for h in root.handlers]
        step_log.propagate = False
        handlers: list[logging.Handler] = []
        if is_main:
            fh = logging.FileHandler(out / "log.txt")
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            handlers.append(fh)
            if not sys.stderr.isatty() and console <= logging.INFO:
                sh = logging.StreamHandler(sys.stderr)
                sh.setFormatter(logging.Formatter("%(message)s"))
                handlers.append(sh)
            for h, lvl in saved:
                h.setLevel(max(lvl, console))
            root.setLevel(logging.INFO)
            root.addHandler(fh)
            step_log.setLevel(logging.INFO)
            for h in handlers:
                step_log.addHandler(h)
        try:
            yield
        finally:
            for h in handlers:
                root.removeHandler(h)
                step_log.removeHandler(h)
                h.close()
            root.setLevel(level)
            for h, lvl in saved:
                h.setLevel(lvl)

    # ----- training ------------------------------------------------------------------------
    def _train(self, plan: Plan, method: "Method", device: "torch.device", ctx: Any) -> Path:
        from lrfacebench.data.faces import Feeder, load_faces

        s, out, engine = self.spec, plan.out, plan.engine
        stages = method.stages()
        names = [st.name for st in stages]
        channels_last = prepare_nets(method, engine)
        if ctx.world_size > 1:
            make_distributed(method, ctx.world_size)

        sets: dict[str, FaceSet] = {k: load_faces(v) for k, v in plan.lists.items()}
        for k, fs in sets.items():
            log.info("%s faces: %d from %s (%d identities)", k, len(fs), fs.info["source"], fs.n_identities)
        feeder = Feeder(sets.get("hr"), sets.get("lr"), device, seed=plan.seed, rank=ctx.rank,
                        world_size=ctx.world_size, channels_last=channels_last, hflip=plan.config.hflip)
        self._fixed = self._fixed_faces(sets, engine.n_samples, device)

        start_index, start_step, elapsed = self._restore(method, stages, device, ctx, plan.seed)
        if start_index is None:
            log.info("nothing left to train in %s", out)
        else:
            metrics = MetricsCSV(out / "metrics.csv")
            if ctx.is_main:
                metrics.truncate({n: i for i, n in enumerate(names)}, start_index, start_step)
                self._drop_later_checkpoints(out, start_index, start_step)
            last = names.index(s.stage) if s.stage is not None else len(stages) - 1
            for si in range(start_index, last + 1):
                elapsed = self._run_stage(method, stages[si], si, start_step if si == start_index else 0,
                                          feeder, engine, metrics, elapsed, device, ctx)
        finished = not stages or (out / CHECKPOINTS / _ckpt_name(len(stages) - 1, names[-1], None)).is_file()
        if ctx.is_main and finished:
            self._export(method, plan.config_hash, out)
        return out

    def _fixed_faces(self, sets: dict[str, "FaceSet"], n: int, device: "torch.device") -> dict[str, Any]:
        """The faces shown in every sample grid: evenly spaced genuine LR (else DS of HR); and the
        faces :meth:`Method.probe` measures: up to ``PROBE_FACES`` genuine and quantised DS(HR)."""
        import torch

        from lrfacebench.degrade import downsample

        from lrfacebench.degrade import to_uint8

        def spaced(fs: "FaceSet", k: int) -> "torch.Tensor":
            idx = torch.linspace(0, len(fs) - 1, min(k, len(fs))).round().long()
            return fs.images[idx].float().div(255).to(device)

        probes = {"genuine": spaced(sets["lr"], PROBE_FACES) if "lr" in sets else None,
                  "artificial": (to_uint8(downsample(spaced(sets["hr"], PROBE_FACES))).float() / 255
                                 if "hr" in sets else None)}
        key = "lr" if "lr" in sets else "hr"
        x = spaced(sets[key], n)
        if key == "lr":
            return {"lr": x, "artificial": False, "hr": None, "probes": probes}
        return {"lr": downsample(x), "artificial": True, "hr": x, "probes": probes}

    def _restore(self, method: "Method", stages: list["Stage"], device: "torch.device", ctx: Any,
                 seed: int) -> tuple[int | None, int, float]:
        """Load the checkpoint this session starts from; return ``(stage_index, step, elapsed)``,
        stage_index ``None`` when there is nothing left to run."""
        from lrfacebench.data.faces import derive_seed
        from lrfacebench.runtime import seed_everything

        s, out = self.spec, self.run_dir
        names = [st.name for st in stages]
        ckpts = list_checkpoints(out)
        target = names.index(s.stage) if s.stage is not None else None
        found = None
        if s.resume:
            pool = [p for (si, _), p in ckpts if target is None or si == target]
            found = _newest_loadable(pool)
        if found is None and target is not None and target > 0:
            prev = out / CHECKPOINTS / _ckpt_name(target - 1, names[target - 1], None)
            if not prev.is_file():
                raise TrainError(f"stage {names[target]!r} starts from stage {names[target - 1]!r}, whose "
                                 f"checkpoint {prev} is missing: run `--stage {names[target - 1]}` first")
            found = (prev, io.load_checkpoint(prev))
        if found is None:
            if s.resume:
                log.info("no checkpoint in %s: starting from scratch", out)
            seed_everything(derive_seed(seed, "train", ctx.rank), self.deterministic)
            return (0 if stages else None), 0, 0.0
        path, state = found
        if state.get("config_hash") != cfglib.config_hash(method.config):
            raise TrainError(f"{path} was written with another config; train into another --out")
        method.load_state_dict(state["state"])
        rngs = state["rng"]
        if len(rngs) == ctx.world_size:
            set_rng_state(rngs[ctx.rank], device)
        else:
            log.warning("checkpoint from %d process(es), now %d: RNG streams re-seeded", len(rngs), ctx.world_size)
            seed_everything(derive_seed(seed, "train", ctx.rank, state["stage_index"], state["step"]))
        si, step = int(state["stage_index"]), int(state["step"])
        log.info("starting from %s (stage %s, step %d)", path, names[si], step)
        if state["stage_done"]:
            if target is not None and si == target:
                log.info("stage %s is already complete (rerun it without --resume)", names[si])
                return None, 0, float(state["time_s"])
            si, step = si + 1, 0
            if si >= len(stages):
                return None, 0, float(state["time_s"])
        return si, step, float(state["time_s"])

    def _drop_later_checkpoints(self, out: Path, stage_index: int, step: int) -> None:
        """Re-running from ``(stage_index, step)`` makes later checkpoints and the export stale."""
        for (si, st), p in list_checkpoints(out):
            if (si, st) > (stage_index, step):
                log.info("removing stale checkpoint %s", p.name)
                p.unlink()
        (out / FINAL).unlink(missing_ok=True)

    def _run_stage(self, method: "Method", stage: "Stage", si: int, start: int, feeder: Any,
                   engine: EngineConfig, metrics: MetricsCSV, elapsed: float, device: "torch.device",
                   ctx: Any) -> float:
        from tqdm import tqdm

        bar = tqdm(total=stage.iterations, initial=start, desc=f"{si + 1}:{stage.name}", file=sys.stderr,
                   disable=None if ctx.is_main else True, dynamic_ncols=True, leave=True)
        log.info("stage %d/%s: %s, steps %d..%d, batch %d x %d process(es)", si + 1, stage.name,
                 ", ".join(stage.needs), start, stage.iterations, stage.batch_size, ctx.world_size)
        t_log, n_log = time.perf_counter(), 0
        t0 = time.perf_counter()
        for step in range(start, stage.iterations):
            batch = feeder.batch(stage, si, step)
            with step_context(device, engine):
                losses = method.train_step(stage.name, batch, step)
            if ctx.world_size > 1:
                sync_buffers(method, ctx.world_size)
                losses = _average_losses(losses, device, ctx.world_size)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                bar.close()
                kept = list_checkpoints(self.run_dir)
                raise TrainError(f"loss term(s) {', '.join(bad)} became {losses[bad[0]]} at stage "
                                 f"{stage.name} step {step + 1}; training stopped. Last good checkpoint: "
                                 f"{kept[-1][1] if kept else 'none'} (resume with --resume after a fix, "
                                 "e.g. a lower learning rate via -o)")
            done, n_log = step + 1, n_log + 1
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()}, refresh=False)
            bar.update(1)
            now = time.perf_counter()
            if ctx.is_main and (done % engine.log_every == 0 or done == stage.iterations):
                rate = n_log * stage.batch_size * ctx.world_size / max(now - t_log, 1e-9)
                t_log, n_log = now, 0
                metrics.write(stage.name, done, {**losses, "img_per_s": rate}, elapsed + now - t0)
                step_log.info("%s %d/%d  %s  %.0f img/s", stage.name, done, stage.iterations,
                              "  ".join(f"{k}={v:.4g}" for k, v in losses.items()), rate)
            final = done == stage.iterations
            if ctx.is_main and (done % engine.sample_every == 0 or final):
                self._write_grid(method, f"{si:02d}_{stage.name}_{done:08d}.png")
                with inference_mode(method):
                    probes = method.probe(self._fixed["probes"]["genuine"], self._fixed["probes"]["artificial"])
                if probes:
                    metrics.write(stage.name, done, probes, elapsed + time.perf_counter() - t0)
            if final or done % engine.checkpoint_every == 0:
                self._checkpoint(method, stage_index=si, stage=stage, step=done, done=final,
                                 time_s=elapsed + time.perf_counter() - t0, engine=engine, device=device, ctx=ctx)
        bar.close()
        return elapsed + time.perf_counter() - t0

    def _write_grid(self, method: "Method", name: str) -> None:
        f = self._fixed
        io.write_png(self.run_dir / "samples" / name, sample_grid(method, f["lr"], f["artificial"], f["hr"]))

    def _checkpoint(self, method: "Method", stage_index: int, stage: "Stage", step: int, done: bool,
                    time_s: float, engine: EngineConfig, device: "torch.device", ctx: Any) -> None:
        import torch.distributed as dist

        rng = rng_state(device)
        if ctx.world_size > 1:
            gathered: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(gathered, {k: v.cpu() for k, v in rng.items()})
            rngs = gathered
        else:
            rngs = [rng]
        if ctx.is_main:
            state = {"format": 1, "method": self.spec.method, "config": cfglib.to_dict(method.config),
                     "config_hash": cfglib.config_hash(method.config), "stage": stage.name,
                     "stage_index": stage_index, "step": step, "stage_done": done, "time_s": time_s,
                     "world_size": ctx.world_size, "state": method.state_dict(), "rng": rngs}
            path = self.run_dir / CHECKPOINTS / _ckpt_name(stage_index, stage.name, None if done else step)
            io.save_checkpoint(path, state)
            periodic = [p for (si, st), p in list_checkpoints(self.run_dir) if si == stage_index and st != math.inf]
            keep = 0 if done else engine.keep_checkpoints  # a finished stage needs only its done checkpoint
            stale = periodic[:len(periodic) - keep]
            if done and not engine.keep_stage_checkpoints:
                stale += [p for (si, st), p in list_checkpoints(self.run_dir) if si < stage_index]
            for p in stale:
                p.unlink()
        if ctx.world_size > 1:
            dist.barrier()

    def _export(self, method: "Method", cfg_hash: str, out: Path) -> None:
        import lrfacebench

        io.save_checkpoint(out / FINAL, {
            "method": self.spec.method, "config": cfglib.to_dict(method.config), "config_hash": cfg_hash,
            "nets": method.deployed_state_dict(), "deployed": list(method.deployed),
            "lrfacebench": lrfacebench.__version__})
        io.write_json(out / "parameters.json", method.parameter_counts())
        log.info("exported %s (deployed: %s)", out / FINAL, ", ".join(method.deployed) or "-")


def train(method: str, preset: str | None = None, **kwargs: Any) -> Path:
    """Python API of ``lrfb train``: ``train("cr", "smoke", out=Path("runs/x"))`` -> run directory.

    Keyword arguments are the fields of :class:`RunSpec` (hr, lr, split, variant, config_file,
    overrides, out, device, seed, resume, stage, deterministic, compile).
    """
    return Trainer(RunSpec(method, preset, **kwargs)).run()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def describe_methods() -> list[str]:
    """One block per registered method; an unimportable one is listed with its error."""
    from lrfacebench.methods import METHODS, get_method

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


@click.command("methods", context_settings={"help_option_names": ["-h", "--help"]})
def methods_command() -> None:
    """List every method with its one-line summary, presets, variants and deployed nets.

    \b
    Example:
      lrfb methods
    """
    for line in describe_methods():
        click.echo(line)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("method", required=False)
@click.option("--hr", type=click.Path(path_type=Path), help="HR paired set (e.g. celeba) written by lrfb build-dataset, or @sample.")
@click.option("--lr", type=click.Path(path_type=Path), help="Genuine-LR set (e.g. widerface) written by lrfb build-dataset, or @sample.")
@click.option("--split", default="train", show_default=True,
              help="Split(s) used from each set, comma-separated, or 'all' (sets without splits are used whole).")
@click.option("--preset", type=click.Choice(PRESETS), help="paper schedule, cpu (tens of minutes) or smoke "
              "(under a minute).  [default: paper, or the run's own on --resume]")
@click.option("--variant", help="Method variant, e.g. CR's ablations (see `lrfb methods`).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML/JSON file of config values (an [engine] table sets trainer options).")
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override, repeatable, e.g. -o lr=2e-4 -o engine.checkpoint_every=500.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Run directory.  [default: runs/<method>_<variant>_<preset>_<data>_s<seed>]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, help="Random seed.  [default: 0, or the run's own on --resume]")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint of --out.")
@click.option("--stage", help="Run (or with --resume, resume) only this stage.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config, stages and parameter counts; train nothing.")
@click.option("--deterministic", is_flag=True, help="Deterministic kernels (bit-exact resume on CPU).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile every net.")
@click.option("--list", "list_", is_flag=True, help="List the methods (same as `lrfb methods`) and exit.")
def train_command(method: str | None, hr: Path | None, lr: Path | None, split: str, preset: str | None,
                  variant: str | None, config_file: Path | None, overrides: tuple[str, ...], out: Path | None,
                  device: str, seed: int | None, resume: bool, stage: str | None, dry_run: bool,
                  deterministic: bool, compile_: bool, list_: bool) -> None:
    """Train METHOD into a run directory: stages in order, checkpoints, resume, multi-GPU.

    METHOD is a registered method (see `lrfb methods`: cr, vdsr, srgan, cyclegan, lrgan)
    or module:Class of your own Method subclass. Without --hr/--lr it trains on the
    embedded sample (its real HR and genuine-LR faces). Under `torchrun --nproc_per_node N`
    it trains data-parallel (nccl on CUDA, gloo on CPU); rank 0 writes the run.

    \b
    Writes RUN/: config.json, env.json, log.txt, metrics.csv, samples/*.png,
    checkpoints/*.pt, final.pt (deployed weights, for `lrfb sr`), parameters.json.

    \b
    Examples:
      lrfb train cr --preset smoke --out runs/cr-smoke
      lrfb train cr --hr data/celeba --lr data/widerface --preset paper --device cuda
      lrfb train cr --variant wo_cr --dry-run
      lrfb train cr --out runs/cr-smoke --resume
      torchrun --nproc_per_node 4 --no-python lrfb train cr --hr ... --lr ...
    """
    if list_:
        for line in describe_methods():
            click.echo(line)
        return
    if method is None:
        raise click.UsageError("missing METHOD (see `lrfb methods`)")
    spec = RunSpec(method=method, preset=preset, variant=variant, config_file=config_file,
                   overrides=overrides, hr=hr, lr=lr, split=tuple(x.strip() for x in split.split(",")),
                   out=out, device=device, seed=seed, resume=resume, stage=stage,
                   deterministic=deterministic, compile=compile_, dry_run=dry_run)
    from lrfacebench.weights import WeightError

    try:
        run = Trainer(spec).run()
    except (ValueError, WeightError) as e:  # bad config values, devices, datasets, weight files
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: continue from the newest checkpoint with --resume") from None
    from lrfacebench.runtime import DistContext

    if not dry_run and DistContext.from_env().is_main:
        click.echo(f"run: {run}")
