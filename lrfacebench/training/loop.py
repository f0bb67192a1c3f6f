"""The training loop: a :class:`~lrfacebench.training.plan.TrainingPlan` run stage by stage into its run
directory, with periodic and end-of-stage checkpoints, exact resume, sample grids, probes and
data-parallel training under ``torchrun`` (rank 0 writes the run).

Batches come from :class:`~lrfacebench.training.feeder.Feeder` (a pure function of seed, stage,
step and rank), and the RNG states of every process are checkpointed, so a resumed run continues
exactly as an uninterrupted one (bit-exact on the CPU with ``deterministic``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from lrfacebench import config as cfglib
from lrfacebench import io, zoo
from lrfacebench.data.faces import load_faces
from lrfacebench.data.landmarks import with_landmarks
from lrfacebench.errors import RunError, TrainError
from lrfacebench.methods import Method, Stage
from lrfacebench.methods.base import LANDMARKS
from lrfacebench.runs import (CHECKPOINTS, FINAL, MetricsCSV, checkpoint_path, export_final, list_checkpoints, load_net_state,
                              newest_loadable, record_session, save_training_checkpoint, write_run_config)
from lrfacebench.runtime import (DistContext, derive_seed, environment, resolve_device, rng_state, seed_everything,
                                 set_rng_state)
from lrfacebench.training import distributed
from lrfacebench.training.feeder import Feeder
from lrfacebench.training.logs import run_logging, step_log
from lrfacebench.training.plan import TrainingPlan, check_needs, describe_init, resolve_plan
from lrfacebench.training.samples import FixedFaces, fixed_faces, grid_and_probes
from lrfacebench.training.spec import EngineConfig, RunSpec

log = logging.getLogger(__name__)


def step_context(device: torch.device, engine: EngineConfig) -> contextlib.AbstractContextManager:
    """What every training step runs under: bf16 autocast on CUDA (``engine.amp``), else nothing."""
    if device.type == "cuda" and engine.amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if engine.amp not in ("bf16", "none"):
        raise ValueError(f"engine.amp must be 'bf16' or 'none', got {engine.amp!r}")
    return contextlib.nullcontext()


def prepare_nets(method: Method, engine: EngineConfig) -> bool:
    """channels_last (CUDA) and ``torch.compile`` (in place) on every net; True if channels_last."""
    channels_last = method.device.type == "cuda" and engine.channels_last
    for net in method.nets.values():
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if engine.compile:
            net.compile()
    return channels_last


class Trainer:
    """Runs one :class:`RunSpec`: stages in order, checkpoints, resume, DDP under ``torchrun``."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.method: Method | None = None
        self.run_dir: Path | None = None
        self.deterministic = spec.deterministic
        self._fixed: FixedFaces | None = None

    def plan(self) -> TrainingPlan:
        """The resolved plan; every reason it cannot be made is a :class:`TrainError`."""
        try:
            return resolve_plan(self.spec)
        except ValueError as e:  # unknown method/preset/variant/option, unusable data folder
            raise TrainError(str(e), getattr(e, "param", None)) from None

    def run(self) -> Path:
        """Train; return the run directory. A dry run only resolves and checks the plan
        (:func:`~lrfacebench.training.plan.describe_training_plan` tells what it would train)."""
        plan = self.plan()
        if self.spec.dry_run:
            return plan.out
        ctx = DistContext.from_env()
        device = resolve_device(self.spec.device)  # cuda -> cuda:$LOCAL_RANK under torchrun
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if ctx.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.run_dir, self.deterministic = plan.out, plan.deterministic
        try:
            method = self._build(plan, device)
            distributed.barrier(ctx.world_size)  # every rank has checked the run directory before rank 0 writes it
            if ctx.is_main:
                self._open_run_dir(plan, device, ctx.world_size)
            distributed.barrier(ctx.world_size)
            with run_logging(plan.out, ctx.is_main):
                return self._train(plan, method, device, ctx)
        finally:
            if ctx.world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()

    # ----- set-up --------------------------------------------------------------------------
    def _build(self, plan: TrainingPlan, device: torch.device) -> Method:
        """The method, identically initialised on every rank, checked against the data and the stage asked for."""
        seed_everything(plan.seed, plan.deterministic)  # same on every rank: identical initial nets
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not plan.deterministic
        method = plan.cls(plan.config, device)
        if plan.init and "zoo" in plan.init:  # a checkpoint, when the run continues from one, replaces these nets later
            try:
                if zoo.init_nets(method, plan.init["zoo"]).sha256 != plan.init["sha256"]:
                    raise TrainError(f"zoo model {plan.init['zoo']} changed since {plan.out} was started from it")
            except RunError as e:
                raise TrainError(str(e)) from None
            log.info(describe_init(plan.init))
        for net, spec in method.external_nets().items():  # e.g. SICNN's recogniser, from another run
            try:
                method.load_external(net, load_net_state(spec, device))
            except (RunError, RuntimeError, KeyError) as e:
                raise TrainError(f"{net} from {spec}: {' '.join(str(e).split())[:300]}") from None
            log.info("%s loaded from %s", net, spec)
        names = [st.name for st in method.stages()]
        check_needs(method.stages(), plan.lists)
        if self.spec.stage is not None and self.spec.stage not in names:
            raise TrainError(f"{self.spec.method} has no stage {self.spec.stage!r}; its stages: {', '.join(names)}")
        if plan.init and "run" in plan.init and "checkpoint" not in plan.init:
            plan.init = self._run_init(plan, names)
        self.method = method
        return method

    def _run_init(self, plan: TrainingPlan, names: list[str]) -> dict:
        """``plan.init`` of ``--init RUN --stage NAME`` completed: RUN's end checkpoint of the stage
        before NAME (file name, sha256, config hash) and the config keys this run changes."""
        target = names.index(plan.init["stage"])
        if target == 0:
            raise TrainError(f"--init {plan.init['run']}: {names[0]} is the first stage; nothing to start it from")
        src = checkpoint_path(Path(plan.init["run"]), target - 1, names[target - 1], None)
        if not src.is_file():
            raise TrainError(f"--init {plan.init['run']}: no end checkpoint of stage {names[target - 1]!r} ({src})")
        state = io.load_checkpoint(src)
        if state.get("method") != self.spec.method:
            raise TrainError(f"--init {plan.init['run']} is a run of {state.get('method')!r}, not {self.spec.method!r}")
        new, old = cfglib.to_dict(plan.config), state["config"]
        differs = sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))
        return {**plan.init, "checkpoint": src.name, "sha256": io.sha256_file(src),
                "config_hash": state["config_hash"], "differs": differs}

    def _open_run_dir(self, plan: TrainingPlan, device: torch.device, world_size: int) -> None:
        if plan.init and "run" in plan.init:  # the run holds the checkpoint it starts from
            own = plan.out / CHECKPOINTS / plan.init["checkpoint"]
            if not own.is_file():
                io.copy_file(Path(plan.init["run"]) / CHECKPOINTS / plan.init["checkpoint"], own)
            if io.sha256_file(own) != plan.init["sha256"]:
                raise TrainError(f"{own} is not the checkpoint {plan.out} was started from (sha256 differs)")
            log.info(describe_init(plan.init))
        write_run_config(plan.out, {
            "method": self.spec.method, "preset": plan.preset, "variant": plan.variant,
            "config": cfglib.to_dict(plan.config), "config_hash": plan.config_hash,
            "engine": dataclasses.asdict(plan.engine), **({"init": plan.init} if plan.init else {})})
        record_session(plan.out, {**environment(device), "seed": plan.seed, "deterministic": plan.deterministic,
                                  "world_size": world_size, "data": plan.data_info}, plan.stored_env)

    # ----- training ------------------------------------------------------------------------
    def _train(self, plan: TrainingPlan, method: Method, device: torch.device, ctx: DistContext) -> Path:
        out, engine = plan.out, plan.engine
        stages = method.stages()
        names = [st.name for st in stages]
        channels_last = prepare_nets(method, engine)
        if ctx.world_size > 1:
            distributed.make_distributed(method, ctx.world_size)

        sets = {k: load_faces(v) for k, v in plan.lists.items()}
        if any(LANDMARKS in st.needs for st in stages):  # detected once per face set, then cached
            sets["hr"] = with_landmarks(sets["hr"])
        for k, fs in sets.items():
            log.info("%s faces: %d from %s (%d identities)", k, len(fs), fs.info["source"], fs.n_identities)
        feeder = Feeder(sets.get("hr"), sets.get("lr"), device, seed=plan.seed, rank=ctx.rank,
                        world_size=ctx.world_size, channels_last=channels_last, hflip=plan.config.hflip)
        self._fixed = fixed_faces(sets, engine.n_samples, device)

        start_index, start_step, elapsed = self._restore(method, stages, device, ctx, plan.seed, plan.init)
        if start_index is None:
            log.info("nothing left to train in %s", out)
        else:
            metrics = MetricsCSV(out / "metrics.csv")
            if ctx.is_main:
                metrics.truncate({n: i for i, n in enumerate(names)}, start_index, start_step)
                self._drop_later_checkpoints(out, start_index, start_step)
            last = names.index(self.spec.stage) if self.spec.stage is not None else len(stages) - 1
            for si in range(start_index, last + 1):
                elapsed = self._run_stage(method, stages[si], si, start_step if si == start_index else 0,
                                          feeder, engine, metrics, elapsed, device, ctx)
        # finished when the last stage that trains anything has its done checkpoint (a stage of
        # 0 iterations writes none)
        trained = [i for i, st in enumerate(stages) if st.iterations > 0]
        finished = not trained or checkpoint_path(out, trained[-1], names[trained[-1]], None).is_file()
        if ctx.is_main and finished:
            export_final(method, out / FINAL, self.spec.method)
            io.write_json(out / "parameters.json", method.parameter_counts())
            log.info("exported %s (deployed: %s)", out / FINAL, ", ".join(method.deployed) or "-")
        return out

    def _restore(self, method: Method, stages: list[Stage], device: torch.device, ctx: DistContext,
                 seed: int, init: dict | None) -> tuple[int | None, int, float]:
        """Load the checkpoint this session starts from; return ``(stage_index, step, elapsed)``,
        stage_index ``None`` when there is nothing left to run. ``init``: what the run started
        from; its checkpoint (``--init RUN``) carries the source run's config."""
        found = self._starting_checkpoint(stages)
        if found is None:
            if self.spec.resume:
                log.info("no checkpoint in %s: starting from scratch", self.run_dir)
            seed_everything(derive_seed(seed, "train", ctx.rank), self.deterministic)
            return (0 if stages else None), 0, 0.0
        path, state = found
        init = init or {}
        started_from = path.name == init.get("checkpoint") and state.get("config_hash") == init.get("config_hash")
        if state.get("config_hash") != cfglib.config_hash(method.config) and not started_from:
            raise TrainError(f"{path} was written with another config; train into another --out")
        method.load_state_dict(state["state"])
        rngs = state["rng"]
        if len(rngs) == ctx.world_size:
            set_rng_state(rngs[ctx.rank], device)
        else:
            log.warning("checkpoint from %d process(es), now %d: RNG streams re-seeded", len(rngs), ctx.world_size)
            seed_everything(derive_seed(seed, "train", ctx.rank, state["stage_index"], state["step"]))
        names = [st.name for st in stages]
        si, step = int(state["stage_index"]), int(state["step"])
        log.info("starting from %s (stage %s, step %d)", path, names[si], step)
        if state["stage_done"]:
            if self.spec.stage is not None and si == names.index(self.spec.stage):
                log.info("stage %s is already complete (rerun it without --resume)", names[si])
                return None, 0, float(state["time_s"])
            si, step = si + 1, 0
            if si >= len(stages):
                return None, 0, float(state["time_s"])
        return si, step, float(state["time_s"])

    def _starting_checkpoint(self, stages: list[Stage]) -> tuple[Path, dict] | None:
        """The checkpoint to continue from: with resume the newest loadable one (of the stage asked
        for, if any); else, for a later stage, the end of the stage before it; None from scratch."""
        out, names = self.run_dir, [st.name for st in stages]
        target = names.index(self.spec.stage) if self.spec.stage is not None else None
        found = None
        if self.spec.resume:
            found = newest_loadable([p for (si, _), p in list_checkpoints(out) if target is None or si == target])
        if found is None and target is not None and target > 0:
            prev = checkpoint_path(out, target - 1, names[target - 1], None)
            if not prev.is_file():
                raise TrainError(f"stage {names[target]!r} starts from stage {names[target - 1]!r}, whose "
                                 f"checkpoint {prev} is missing: run `--stage {names[target - 1]}` first")
            found = (prev, io.load_checkpoint(prev))
        return found

    def _drop_later_checkpoints(self, out: Path, stage_index: int, step: int) -> None:
        """Re-running from ``(stage_index, step)`` makes later checkpoints and the export stale."""
        for (si, st), p in list_checkpoints(out):
            if (si, st) > (stage_index, step):
                log.info("removing stale checkpoint %s", p.name)
                p.unlink()
        (out / FINAL).unlink(missing_ok=True)

    def _run_stage(self, method: Method, stage: Stage, si: int, start: int, feeder: Feeder,
                   engine: EngineConfig, metrics: MetricsCSV, elapsed: float, device: torch.device,
                   ctx: DistContext) -> float:
        """Steps ``start..stage.iterations`` of one stage; returns the run's training time after it."""
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
                distributed.sync_buffers(method, ctx.world_size)
                losses = distributed.average_losses(losses, device, ctx.world_size)
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
                grid, probes = grid_and_probes(method, self._fixed)
                io.write_png(self.run_dir / "samples" / f"{si:02d}_{stage.name}_{done:08d}.png", grid)
                if probes:
                    metrics.write(stage.name, done, probes, elapsed + time.perf_counter() - t0)
            if final or done % engine.checkpoint_every == 0:
                self._checkpoint(method, si, stage, done, final, elapsed + time.perf_counter() - t0, engine,
                                 device, ctx)
        bar.close()
        return elapsed + time.perf_counter() - t0

    def _checkpoint(self, method: Method, stage_index: int, stage: Stage, step: int, done: bool,
                    time_s: float, engine: EngineConfig, device: torch.device, ctx: DistContext) -> None:
        """Every rank's RNG state into one checkpoint (rank 0 writes it); stale periodic ones go."""
        rngs = distributed.gather_objects({k: v.cpu() for k, v in rng_state(device).items()}, ctx.world_size)
        if ctx.is_main:
            path = checkpoint_path(self.run_dir, stage_index, stage.name, None if done else step)
            save_training_checkpoint(path, method, self.spec.method, stage.name, stage_index, step, done,
                                     time_s, rngs)
            periodic = [p for (si, st), p in list_checkpoints(self.run_dir) if si == stage_index and st != math.inf]
            keep = 0 if done else engine.keep_checkpoints  # a finished stage needs only its done checkpoint
            stale = periodic[:len(periodic) - keep]
            if done and not engine.keep_stage_checkpoints:
                stale += [p for (si, st), p in list_checkpoints(self.run_dir) if si < stage_index]
            for p in stale:
                p.unlink()
        distributed.barrier(ctx.world_size)


def train(method: str, preset: str | None = None, **kwargs: Any) -> Path:
    """Python API of ``lrfb train``: ``train("cr", "smoke", out=Path("runs/x"))`` -> run directory.

    Keyword arguments are the fields of :class:`RunSpec` (hr, lr, split, variant, config_file,
    overrides, out, device, seed, resume, stage, deterministic, compile, dry_run).
    """
    return Trainer(RunSpec(method, preset, **kwargs)).run()
