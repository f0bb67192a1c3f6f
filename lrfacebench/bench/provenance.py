"""The trained models a benchmark needs, named by :class:`RunKey`: trained on demand into the runs
folder (finished runs are reused), loaded once, and described by the provenance fields every
leaderboard row carries (run, checkpoint and config hashes, versions, device, date)."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from lrfacebench import io
from lrfacebench.bench.config import BenchConfig, load_recognizers
from lrfacebench.bench.data import BenchData
from lrfacebench.methods import Method, get_method
from lrfacebench.runs import FINAL, load_method, load_recognizer
from lrfacebench.training.loop import train
from lrfacebench.training.spec import SAMPLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunKey:
    """A trained model the tables need: method, variant, and for derived runs a seed offset and
    config overrides (e.g. the independently trained recogniser)."""

    method: str
    variant: str = "default"
    seed_offset: int = 0
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "RunKey":
        method, _, variant = spec.partition(":")
        return cls(method, variant or "default")

    @property
    def label(self) -> str:
        return self.method if self.variant == "default" else f"{self.method}:{self.variant}"


class TrainedRuns:
    """Training runs of one benchmark (``cfg``'s preset, seed and device) on ``data``'s training sets.

    ``timings`` receives the wall time of every run trained here (``train LABEL``)."""

    def __init__(self, cfg: BenchConfig, runs_dir: Path, data: BenchData, device: torch.device,
                 env: dict[str, Any], timings: dict[str, float]) -> None:
        self.cfg, self.runs_dir, self.data, self.device, self.env = cfg, runs_dir, data, device, env
        self.timings = timings
        self._methods: dict[RunKey, Method] = {}
        self._provenance: dict[RunKey | None, dict[str, str]] = {}

    def run_dir(self, key: RunKey) -> Path:
        name = f"{key.method}-{key.variant}-{self.cfg.training_preset}-s{self.cfg.seed + key.seed_offset}"
        if key.overrides:
            name += "-" + io.sha256_json(list(key.overrides))[:8]
        return self.runs_dir / name

    def ensure_trained(self, key: RunKey) -> Path | None:
        """The finished run of ``key`` (trained now if missing or unfinished); None if untrained."""
        cls = get_method(key.method)
        if not cls(cls.make_config("smoke", key.variant), "cpu").stages():
            return None
        out = self.run_dir(key)
        if not (out / FINAL).is_file():
            log.info("training %s -> %s", key.label, out)
            t0 = time.perf_counter()
            train(key.method, self.cfg.training_preset, variant=key.variant, out=out,
                  hr=self.data.train_hr or SAMPLE, lr=self.data.train_lr or SAMPLE, device=self.cfg.device,
                  seed=self.cfg.seed + key.seed_offset,
                  # only the newest end-of-stage checkpoint is kept: runs stay small on disk
                  overrides=key.overrides + ("engine.keep_stage_checkpoints=false",),
                  resume=out.is_dir() and any(out.iterdir()))
            self.timings[f"train {key.label}"] = time.perf_counter() - t0
        return out

    def run_name(self, key: RunKey) -> str:
        """The run directory's name, or the method's name for an untrained method."""
        run = self.ensure_trained(key)
        return run.name if run is not None else key.method

    def method(self, key: RunKey) -> Method:
        """The method of ``key`` in eval mode on the benchmark device (trained if needed)."""
        if key not in self._methods:
            run = self.ensure_trained(key)
            self._methods[key] = load_method(run if run is not None else key.method, self.device)
        return self._methods[key]

    def provenance(self, key: RunKey | None) -> dict[str, str]:
        """Row fields naming what produced a result: run, checkpoint and config hashes, versions."""
        if key in self._provenance:
            return self._provenance[key]
        prov = {"lrfb_version": self.env["lrfacebench"], "git_sha": self.env.get("git_sha") or "",
                "torch_version": self.env.get("torch") or "", "device": self.env.get("gpu") or str(self.device),
                "date": dt.date.today().isoformat()}
        run = self.ensure_trained(key) if key is not None else None
        if run is not None:
            final = io.load_checkpoint(run / FINAL)
            prov.update(run_id=run.name, checkpoint_sha256=io.sha256_file(run / FINAL),
                        config_sha256=str(final.get("config_hash", "")))
        elif key is not None:
            prov.update(run_id=f"{key.method} (untrained)")
        self._provenance[key] = prov
        return prov

    def checkpoint(self, key: RunKey) -> str | None:
        """sha256 of the run's ``final.pt``; None for an untrained method."""
        return self.provenance(key).get("checkpoint_sha256")

    def recognizer(self, name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], RunKey]:
        """``embed`` ((N,3,64,64) [0,1] -> (N,D)) of the recogniser ``name`` of ``tables.toml``,
        a net trained inside a run, and the key of that run."""
        spec = load_recognizers()[name]
        key = RunKey(spec["run"], spec.get("variant", "default"), spec.get("seed_offset", 0),
                     tuple(spec.get("overrides", ())))
        run = self.ensure_trained(key)
        return load_recognizer(f"{run}:{spec['net']}", str(self.device)), key
