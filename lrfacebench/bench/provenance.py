"""The trained models a benchmark needs, named by :class:`RunKey`: the model zoo's weights
(``BenchConfig.train`` false, the default), or runs trained on demand into the runs folder
(finished runs are reused); loaded once, and described by the provenance fields every
leaderboard row carries (zoo name or run, weights and config hashes, versions, device, date).

A model the zoo lacks is trained with the benchmark's training preset, and its rows say so
(``run_id`` ends in ``(no zoo weights: trained with the P preset)``); a log warning names it too."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from lrfacebench import io, zoo
from lrfacebench.bench.config import BenchConfig, load_recognizers
from lrfacebench.bench.data import BenchData
from lrfacebench.methods import Method, get_method
from lrfacebench.runs import FINAL, load_method, load_recognizer, train_seconds
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
    zoo: str = ""  # the zoo entry of a recogniser (an SR method's is its label)

    @classmethod
    def parse(cls, spec: str) -> "RunKey":
        method, _, variant = spec.partition(":")
        return cls(method, variant or "default")

    @property
    def label(self) -> str:
        return self.method if self.variant == "default" else f"{self.method}:{self.variant}"

    @property
    def zoo_name(self) -> str:
        return self.zoo or self.label


@dataclass(frozen=True)
class Weights:
    """What produced a model's outputs.

    ``id``: ``zoo:NAME``, a run directory's name, or the method's name (untrained); ``sha256``:
    of the weights file ("" untrained); ``train_seconds``/``train_device``: of its training (None
    untrained), ``preset`` its training preset; ``note``: why a run was trained although the zoo
    was asked for."""

    id: str
    sha256: str = ""
    config_sha256: str = ""
    train_seconds: float | None = None
    train_device: str = ""
    preset: str = ""
    note: str = ""

    @property
    def folder(self) -> str:
        """A file-name form of ``id``."""
        return self.id.replace(":", "-")


def run_name(key: RunKey, preset: str, seed: int) -> str:
    """``METHOD-VARIANT-PRESET-sSEED[-HASH]`` (seed plus the key's offset; HASH of its overrides):
    the run directory of ``key`` trained with ``preset`` (the benchmark's and the zoo build's)."""
    name = f"{key.method}-{key.variant}-{preset}-s{seed + key.seed_offset}"
    return name + "-" + io.sha256_json(list(key.overrides))[:8] if key.overrides else name


class TrainedRuns:
    """Training runs of one benchmark (``cfg``'s preset, seed and device) on ``data``'s training sets.

    ``timings`` receives the wall time of every run trained here (``train LABEL``)."""

    def __init__(self, cfg: BenchConfig, runs_dir: Path, data: BenchData, device: torch.device,
                 env: dict[str, Any], timings: dict[str, float]) -> None:
        self.cfg, self.runs_dir, self.data, self.device, self.env = cfg, runs_dir, data, device, env
        self.timings = timings
        self._methods: dict[RunKey, Method] = {}
        self._weights: dict[RunKey, Weights] = {}
        self._provenance: dict[RunKey | None, dict[str, str]] = {}

    def run_dir(self, key: RunKey) -> Path:
        return self.runs_dir / run_name(key, self.cfg.training_preset, self.cfg.seed)

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

    def from_zoo(self, key: RunKey) -> bool:
        """Whether ``key``'s model comes from the zoo (not training, and the zoo has it)."""
        return not self.cfg.train and zoo.has(key.zoo_name, "recognizer" if key.zoo else "sr")

    def weights(self, key: RunKey) -> Weights:
        """What ``key``'s outputs come from: its zoo weights, else its run (trained if needed)."""
        if key in self._weights:
            return self._weights[key]
        if self.from_zoo(key):
            e = zoo.entry(key.zoo_name)
            w = Weights(f"zoo:{e.name}", e.sha256, e.card["config_hash"], e.card["training"]["seconds"],
                        e.card["training"]["device"], e.card["preset"])
        else:
            run = self.ensure_trained(key)
            if run is None:
                w = Weights(key.method)
            else:
                note = "" if self.cfg.train else f"no zoo weights: trained with the {self.cfg.training_preset} preset"
                if note:
                    log.warning("%s: %s", key.zoo_name, note)
                w = Weights(run.name, io.sha256_file(run / FINAL),
                            str(io.load_checkpoint(run / FINAL).get("config_hash", "")), train_seconds(run),
                            str(io.read_json(run / "env.json").get("device", "")), self.cfg.training_preset, note)
        self._weights[key] = w
        return w

    def run_name(self, key: RunKey) -> str:
        """A folder name for ``key``'s outputs: its zoo name, run directory or method name."""
        return self.weights(key).folder

    def method(self, key: RunKey) -> Method:
        """The method of ``key`` in eval mode on the benchmark device (trained if needed)."""
        if key not in self._methods:
            if self.from_zoo(key):
                self._methods[key] = zoo.load(key.zoo_name, self.device)
            else:
                run = self.ensure_trained(key)
                self._methods[key] = load_method(run if run is not None else key.method, self.device)
        return self._methods[key]

    def provenance(self, key: RunKey | None) -> dict[str, str]:
        """Row fields naming what produced a result: zoo name or run, weights and config hashes, versions."""
        if key in self._provenance:
            return self._provenance[key]
        prov = {"lrfb_version": self.env["lrfacebench"], "git_sha": self.env.get("git_sha") or "",
                "torch_version": self.env.get("torch") or "", "device": self.env.get("gpu") or str(self.device),
                "date": dt.date.today().isoformat()}
        if key is not None:
            w = self.weights(key)
            run_id = f"{w.id} ({w.note})" if w.note else w.id
            prov.update(run_id=run_id if w.sha256 else f"{key.method} (untrained)",
                        checkpoint_sha256=w.sha256, config_sha256=w.config_sha256)
        self._provenance[key] = prov
        return prov

    def checkpoint(self, key: RunKey) -> str | None:
        """sha256 of the model's weights file (zoo or ``final.pt``); None for an untrained method."""
        return self.weights(key).sha256 or None

    def recognizer(self, name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], RunKey]:
        """``embed`` ((N,3,64,64) [0,1] -> (N,D)) of the recogniser ``name`` of ``tables.toml`` (its
        zoo entry, else a net trained inside a run), and the key of that model."""
        spec = load_recognizers()[name]
        key = RunKey(spec["run"], spec.get("variant", "default"), spec.get("seed_offset", 0),
                     tuple(spec.get("overrides", ())), spec.get("zoo", name))
        if self.from_zoo(key):
            return zoo.recognizer(key.zoo, str(self.device)), key
        run = self.ensure_trained(key)
        return load_recognizer(f"{run}:{spec['net']}", str(self.device)), key
