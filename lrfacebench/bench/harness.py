"""``lrfb benchmark``: table specs (``tables.toml``, data) -> training runs -> cached SR outputs ->
metric rows -> ``tableN.csv``, ``leaderboard.csv``, ``LEADERBOARD.md``, figures.

The harness knows evaluation *kinds* (``sr_fid``, ``lr_fid``, ``rank1``, ``sr_psnr_ssim``,
``paired_quality``, ``complexity``) and the :class:`~lrfacebench.methods.base.Method` interface,
nothing method-specific. A table with ``compare_to`` gets, on every row, the difference to that
method on the same faces with a paired bootstrap interval (:mod:`lrfacebench.metrics.bootstrap`). Every unit of work is cached under ``--out`` (runs, SR PNGs, one JSON per
evaluation job, FID features in the metric cache), so a killed benchmark resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.resources
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from lrfacebench import io, runtime
from lrfacebench.bench import figures
from lrfacebench.bench.data import BenchData, TestSet, build_degraded_sample, build_sample, resolve, sample_data
from lrfacebench.bench.leaderboard import Row, merge, render_markdown, write_rows
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.metrics import bootstrap
from lrfacebench.runs import FINAL, load_method, load_recognizer, train_seconds
from lrfacebench.training.loop import train
from lrfacebench.training.spec import SAMPLE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

PRESETS = {"demo": "smoke", "cpu": "cpu", "paper": "paper"}  # benchmark preset -> training preset
# Inference timing per benchmark preset (the paper protocol: 20 warm-up runs, median of 1,000).
TIMING = {"demo": dict(warmup=5, n_timed=30, large_batch=64, large_repeats=2),
          "cpu": dict(warmup=10, n_timed=100, large_batch=256, large_repeats=3),
          "paper": dict(warmup=20, n_timed=1000, large_batch=256, large_repeats=5)}
TABLE_ORDER = ("table1", "table2", "table3", "table4", "table5", "table6", "table7", "table_degraded",
               "complexity")


@dataclass
class BenchConfig:
    """What one ``lrfb benchmark`` invocation runs (snapshotted to ``OUT/config.json``)."""

    preset: str = "demo"
    tables: tuple[str, ...] = TABLE_ORDER
    methods: tuple[str, ...] = ()  # restrict to these method names (empty = every method of a table)
    data: dict[str, str] = field(default_factory=dict)  # NAME -> built dataset folder
    reference: str = ""  # folder of HR faces for FID/KID (default: from data, else the sample's)
    genuine: dict[str, str] = field(default_factory=dict)  # NAME -> folder of genuine-LR crops
    paired: dict[str, str] = field(default_factory=dict)  # NAME -> paired set (built or hr/ + lr/)
    runs: str = ""  # training runs folder (default OUT/runs); finished runs there are reused
    data_dir: str = ""  # built sample sets and image folders for FID (default OUT/data)
    out: str = "lrfb-results"
    device: str = "auto"
    seed: int = 0
    fid_mode: str = "clean"
    inception: str = ""  # path of the FID Inception weights (default: found offline, hash-checked)
    trials: int = 10  # rank-1 gallery/probe trials
    batch_size: int = 256
    figure_faces: int = 8
    bootstrap: int = bootstrap.RESAMPLES  # paired bootstrap resamples over test faces


def _specs() -> dict[str, Any]:
    text = importlib.resources.files("lrfacebench.bench").joinpath("tables.toml").read_text()
    return tomllib.loads(text)


def load_tables() -> dict[str, dict[str, Any]]:
    """The table specs shipped in ``lrfacebench/bench/tables.toml``."""
    return _specs()["tables"]


def load_recognizers() -> dict[str, dict[str, Any]]:
    """The recognisers the tables name (``[recognizers.NAME]`` of ``tables.toml``)."""
    return _specs()["recognizers"]


def load_reported(tables: Iterable[str]) -> list[Row]:
    """The paper's reported values (``source=paper``) for the selected tables."""
    import csv

    text = importlib.resources.files("lrfacebench.bench").joinpath("reported.csv").read_text()
    keep = set(tables)
    rows = []
    for d in csv.DictReader(text.splitlines()):
        if d["table"] in keep:
            rows.append(Row(table=d["table"], dataset=d["dataset"], split="test", method=d["method"],
                            variant=d["variant"] or "default", metric=d["metric"], value=float(d["value"]),
                            higher_is_better=d["metric"] in ("rank1", "psnr_y", "ssim_y"),
                            protocol=d["protocol"], source="paper", n_runs=0))
    return rows


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


@dataclass
class Result:
    """One evaluated row, the table's label of what produced it (``cr:wo_cr``, ``genuine-lr``),
    and its bootstrap replicates over the test faces (``None`` where a row has none)."""

    row: Row
    label: str
    replicates: list[float] | None = None


def with_deltas(results: list[Result], compare_to: str) -> list[Row]:
    """Rows with their difference to the ``compare_to`` row of the same dataset and metric (paired
    bootstrap interval from the shared replicates); rows without a partner are left as they are."""
    partners = {(r.row.dataset, r.row.metric): r for r in results
                if r.label == compare_to and r.replicates is not None}
    rows = []
    for r in results:
        ref = partners.get((r.row.dataset, r.row.metric))
        if ref is None or r is ref or r.replicates is None or len(r.replicates) != len(ref.replicates):
            rows.append(r.row)
            continue
        d = bootstrap.paired_delta(r.row.value, ref.row.value, r.replicates, ref.replicates)
        rows.append(dataclasses.replace(r.row, delta=d.value, delta_ci_low=d.low, delta_ci_high=d.high,
                                        delta_vs=compare_to))
    return rows


class Benchmark:
    """One benchmark: resolves data, trains what is missing, evaluates every selected table."""

    def __init__(self, cfg: BenchConfig) -> None:
        if cfg.preset not in PRESETS:
            raise ValueError(f"unknown preset {cfg.preset!r}; choose from {sorted(PRESETS)}")
        all_tables = load_tables()
        unknown = set(cfg.tables) - set(all_tables)
        if unknown:
            raise ValueError(f"unknown table(s) {sorted(unknown)}; known: {sorted(all_tables)}")
        self.cfg = cfg
        self.specs = {t: all_tables[t] for t in TABLE_ORDER if t in cfg.tables}
        self.out = Path(cfg.out)
        self.runs_dir = Path(cfg.runs) if cfg.runs else self.out / "runs"
        self.data_dir = Path(cfg.data_dir) if cfg.data_dir else self.out / "data"
        self.device = runtime.resolve_device(cfg.device)
        self.env = runtime.environment(self.device)
        self.data: BenchData = self._resolve_data()
        self._methods: dict[RunKey, Any] = {}
        self._sr: dict[tuple[RunKey, str, str], torch.Tensor] = {}
        self._inception = None
        self._provenance: dict[RunKey | None, dict[str, str]] = {}
        self.timings: dict[str, float] = {}

    def _resolve_data(self) -> BenchData:
        """The sets of ``cfg``; the sample fills empty roles (its photos are only searched, and its
        degraded set only built, when they are needed)."""
        cfg = self.cfg
        given = cfg.data or cfg.reference or cfg.genuine or cfg.paired
        wants_paired = any(s.get("datasets") == "paired" for s in self.specs.values()) and not cfg.paired
        degraded = build_degraded_sample(self.data_dir / "sample-degraded") if wants_paired else None
        if not given:
            return sample_data(build_sample(self.data_dir / "sample-build", cfg.device), degraded)
        return resolve(cfg.data, cfg.reference or None, cfg.genuine, cfg.paired, sample_data(degraded=degraded))

    # ----- runs ------------------------------------------------------------------------------
    def _methods_of(self, spec: Mapping[str, Any]) -> list[RunKey]:
        keys = [RunKey.parse(m) for m in spec.get("methods", [])]
        return [k for k in keys if not self.cfg.methods or k.method in self.cfg.methods]

    def run_dir(self, key: RunKey) -> Path:
        name = f"{key.method}-{key.variant}-{PRESETS[self.cfg.preset]}-s{self.cfg.seed + key.seed_offset}"
        if key.overrides:
            name += "-" + io.sha256_json(list(key.overrides))[:8]
        return self.runs_dir / name

    def ensure_trained(self, key: RunKey) -> Path | None:
        """The finished run of ``key`` (trained now if missing or unfinished); None if untrained."""
        from lrfacebench.methods import get_method

        cls = get_method(key.method)
        if not cls(cls.make_config("smoke", key.variant), "cpu").stages():
            return None
        out = self.run_dir(key)
        if not (out / FINAL).is_file():
            log.info("training %s -> %s", key.label, out)
            t0 = time.perf_counter()
            train(key.method, PRESETS[self.cfg.preset], variant=key.variant, out=out,
                  hr=self.data.train_hr or SAMPLE, lr=self.data.train_lr or SAMPLE, device=self.cfg.device,
                  seed=self.cfg.seed + key.seed_offset,
                  # only the newest end-of-stage checkpoint is kept: runs stay small on disk
                  overrides=key.overrides + ("engine.keep_stage_checkpoints=false",),
                  resume=out.is_dir() and any(out.iterdir()))
            self.timings[f"train {key.label}"] = time.perf_counter() - t0
        return out

    def method(self, key: RunKey) -> Any:
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

    # ----- SR outputs (cached as PNG folders) --------------------------------------------------
    def lr_input(self, test: TestSet) -> torch.Tensor:
        """``(N,3,16,16)`` float in [0,1]: the set's LR faces (a paired set's LR side), or quantised
        DS(HR) for artificial sets."""
        if test.lr is not None:
            return test.lr.images.float() / 255
        x = test.faces.images.float() / 255
        return to_uint8(downsample(x)).float() / 255 if test.role == "artificial" else x

    def outputs(self, key: RunKey, test: TestSet, what: str = "sr") -> tuple[torch.Tensor, Path]:
        """``what="sr"``: ``(N,3,64,64)``; ``"regulated"``: ``(N,3,16,16)`` — float in [0,1], and the
        folder of PNGs holding them (written once, complete when ``_complete.json`` exists)."""
        folder = self.out / "outputs" / self._run_name(key) / f"{test.name}-{test.role}-{what}"
        cache_key = (key, test.name + test.role, what)
        if cache_key in self._sr:
            return self._sr[cache_key], folder
        marker = folder / "_complete.json"
        if marker.is_file() and io.read_json(marker).get("provenance") == self.provenance(key).get(
                "checkpoint_sha256", key.method):
            files = sorted(folder.glob("*.png"))
            images = torch.stack([torch.from_numpy(io.read_rgb(f)).permute(2, 0, 1) for f in files])
            result = images.float() / 255
        else:
            method = self.method(key)
            lr = self.lr_input(test)
            chunks = []
            with torch.no_grad():
                for i in range(0, len(lr), self.cfg.batch_size):
                    x = lr[i:i + self.cfg.batch_size].to(self.device)
                    if what == "sr":
                        y = method.super_resolve(x, artificial=test.role == "artificial")
                    else:
                        y = method.regulate(x)
                        if y is None:
                            raise ValueError(f"{key.label} has no LR-space regulation (Table 5 needs one)")
                    chunks.append(to_uint8(y.float().cpu()))
            images = torch.cat(chunks)
            for i, img in enumerate(images):
                io.write_png(folder / f"{i:06d}.png", img.permute(1, 2, 0).numpy())
            io.write_json(marker, {"n": len(images), "test_set": test.name, "test_sha256": test.sha256,
                                   "provenance": self.provenance(key).get("checkpoint_sha256", key.method)})
            result = images.float() / 255
        self._sr[cache_key] = result
        return result, folder

    def _run_name(self, key: RunKey) -> str:
        run = self.ensure_trained(key)
        return run.name if run is not None else key.method

    def image_folder(self, name: str, images: torch.Tensor) -> Path:
        """Write ``(N,3,S,S)`` uint8 images once as PNGs under ``OUT/data/name`` (for FID)."""
        folder = self.data_dir / name
        marker = folder / "_complete.json"
        if not marker.is_file():
            for i, img in enumerate(images):
                io.write_png(folder / f"{i:06d}.png", img.permute(1, 2, 0).numpy())
            io.write_json(marker, {"n": len(images)})
        return folder

    # ----- evaluation jobs ---------------------------------------------------------------------
    def job(self, parts: Mapping[str, Any], compute: Callable[[], list[Result]]) -> list[Result]:
        """Run ``compute`` once per distinct ``parts`` (its results are cached as JSON)."""
        parts = {**parts, "bootstrap": [self.cfg.bootstrap, self.cfg.seed]}
        path = self.out / "jobs" / f"{io.sha256_json(parts)[:24]}.json"
        if path.is_file():
            return [Result(Row(**d["row"]), d["label"], d["replicates"]) for d in io.read_json(path)["results"]]
        results = compute()
        io.write_json(path, {"job": parts, "results": [
            {"row": dataclasses.asdict(r.row), "label": r.label, "replicates": r.replicates} for r in results]})
        return results

    def weights(self, test: TestSet) -> Any:
        """``(R,N)`` bootstrap weights over the faces of ``test``, shared by every method on it."""
        return bootstrap.weights(len(test), self.cfg.bootstrap, seed=self.cfg.seed)

    def _row(self, table: str, test: TestSet | None, key: RunKey | None, label: str | None = None,
             **values: Any) -> Row:
        std = values.pop("std", None)
        protocol = values.pop("protocol", "")
        if test is not None and test.note:
            protocol = f"{protocol};{test.note}" if protocol else test.note
        return Row(table=table, dataset=test.name if test else "-", split=test.split if test else "",
                   method=label or (key.method if key else ""),
                   # the resolved variant: e.g. SRGAN's default is "mse_adv", a stated deviation
                   variant=self.method(key).config.variant if key else "default",
                   std=math.nan if std is None else float(std), protocol=protocol,
                   **values, **self.provenance(key))

    def inception(self) -> Any:
        from lrfacebench.metrics.fid import load_inception

        if self._inception is None:
            self._inception = load_inception(self.cfg.fid_mode, self.cfg.inception or None, str(self.device))
        return self._inception

    def _distribution_rows(self, table: str, test: TestSet, key: RunKey | None, folder: Path,
                           reference: Path, metrics: Iterable[str], label: str | None = None,
                           metric_names: Mapping[str, str] | None = None) -> list[Result]:
        """FID/KID of the images in ``folder`` (face i of ``test`` in file i) against ``reference``;
        ``std`` and the replicates are the bootstrap over the test faces (reference fixed)."""
        from lrfacebench.metrics.fid import compute_fid, compute_kid, folder_features

        feats = folder_features(folder, self.inception()).feats
        ref_feats = folder_features(reference, self.inception()).feats
        w = self.weights(test)
        results = []
        for metric in metrics:
            fn, replicate = {"fid": (compute_fid, bootstrap.fid_replicates),
                             "kid": (compute_kid, bootstrap.kid_replicates)}[metric]
            r = fn(folder, reference, net=self.inception(), mode=self.cfg.fid_mode, device=str(self.device))
            reps = replicate(feats, ref_feats, w)
            row = self._row(table, test, key, label, metric=(metric_names or {}).get(metric, metric),
                            value=r.value, std=float(reps.std()), n_images=r.n_images, higher_is_better=False,
                            protocol=f"{r.protocol};std=bootstrap({len(w)}) over test faces;"
                                     f"reference={self.data.reference.name}(N={r.n_reference})")
            results.append(Result(row, label or key.label, reps.tolist()))
        return results

    def eval_sr_fid(self, table: str, spec: Mapping[str, Any]) -> list[Result]:
        ref = self.image_folder(f"{self.data.reference.name}-reference-hr64", self.data.reference.faces.images)
        rows = []
        for test in self.data.of_role("genuine"):
            for key in self._methods_of(spec):
                parts = {"kind": "sr_fid", "table": table, "test": test.sha256, "set": test.name,
                         "run": self.provenance(key).get("checkpoint_sha256", key.label), "key": key.label,
                         "metrics": spec.get("metrics", ["fid"]), "mode": self.cfg.fid_mode,
                         "reference": self.data.reference.sha256}
                rows += self.job(parts, lambda: self._distribution_rows(
                    table, test, key, self.outputs(key, test)[1], ref, spec.get("metrics", ["fid"])))
        return rows

    def eval_lr_fid(self, table: str, spec: Mapping[str, Any]) -> list[Result]:
        ref_hr = self.data.reference.faces.images.float() / 255
        a_lr = self.image_folder(f"{self.data.reference.name}-reference-ds16", to_uint8(downsample(ref_hr)))
        rows = []
        names = {"fid": "fid_vs_artificial_lr", "kid": "kid_vs_artificial_lr"}
        for test in self.data.of_role("genuine"):
            g_lr = self.image_folder(f"{test.name}-lr16", test.faces.images)
            parts = {"kind": "lr_fid", "table": table, "test": test.sha256, "set": test.name,
                     "reference": self.data.reference.sha256, "mode": self.cfg.fid_mode}
            rows += self.job(parts, lambda: self._distribution_rows(
                table, test, None, g_lr, a_lr, ("fid", "kid"), "genuine-lr", names))
            for key in self._methods_of(spec):
                run_parts = {**parts, "run": self.provenance(key).get("checkpoint_sha256"), "key": key.label}
                rows += self.job(run_parts, lambda: self._distribution_rows(
                    table, test, key, self.outputs(key, test, "regulated")[1], a_lr, ("fid", "kid"),
                    None, names))
        return rows

    def recognizer(self, name: str) -> tuple[Callable, RunKey]:
        """``embed`` ((N,3,64,64) [0,1] -> (N,D)) of the recogniser ``name`` of ``tables.toml``,
        a net trained inside a run."""
        spec = load_recognizers()[name]
        key = RunKey(spec["run"], spec.get("variant", "default"), spec.get("seed_offset", 0),
                     tuple(spec.get("overrides", ())))
        run = self.ensure_trained(key)
        return load_recognizer(f"{run}:{spec['net']}", str(self.device)), key

    def eval_rank1(self, table: str, spec: Mapping[str, Any]) -> list[Result]:
        from lrfacebench.metrics.recognition import rank1_cmc

        rows = []
        for rec_name in spec["recognizers"]:
            embed, rec_key = self.recognizer(rec_name)
            rec_sha = self.provenance(rec_key).get("checkpoint_sha256", "")
            for test in self.data.of_role("identity"):
                labels = [test.faces.identities[i] if i >= 0 else "" for i in test.faces.identity.tolist()]
                for key in self._methods_of(spec):
                    def compute(key: RunKey = key, test: TestSet = test) -> list[Result]:
                        sr, _ = self.outputs(key, test)
                        r = rank1_cmc(embed, sr, labels, trials=self.cfg.trials, seed=self.cfg.seed)
                        row = self._row(table, test, key, metric="rank1", value=100 * r.rank1_mean,
                                        std=100 * r.rank1_std, n_images=r.n_faces, higher_is_better=True,
                                        protocol=f"{r.protocol};percent;recognizer={rec_name}"
                                                 f"(sha256={rec_sha[:12]})")
                        io.write_json(self.out / "cmc" / f"{test.name}__{rec_name}__{key.label}.json",
                                      {"cmc": r.cmc, "n_identities": r.n_identities, "n_probes": r.n_probes})
                        return [Result(row, key.label)]
                    parts = {"kind": "rank1", "table": table, "test": test.sha256, "set": test.name,
                             "recognizer": rec_sha or rec_name, "run": self.provenance(key).get(
                                 "checkpoint_sha256", key.label), "key": key.label, "trials": self.cfg.trials,
                             "seed": self.cfg.seed}
                    rows += self.job(parts, compute)
        return rows

    def eval_sr_psnr_ssim(self, table: str, spec: Mapping[str, Any]) -> list[Result]:
        from lrfacebench.metrics.psnr_ssim import measure_tensors

        rows = []
        for test in self.data.of_role("artificial"):
            hr = test.faces.images.float() / 255
            for key in self._methods_of(spec):
                def compute(key: RunKey = key, test: TestSet = test) -> list[Result]:
                    result = measure_tensors(self.outputs(key, test)[0], hr, crop_border=0)
                    w = self.weights(test)
                    return [Result(self._row(table, test, key, metric=d["metric"], value=d["value"], std=d["std"],
                                             n_images=d["n_images"], higher_is_better=True,
                                             protocol=f"{d['protocol']};lr=DS(hr) bicubic a=-0.5 x1/4"),
                                   key.label, _replicates([x[d["metric"]] for x in result.per_image], w))
                            for d in result.rows()]
                parts = {"kind": "sr_psnr_ssim", "table": table, "test": test.sha256, "set": test.name,
                         "run": self.provenance(key).get("checkpoint_sha256", key.label), "key": key.label}
                rows += self.job(parts, compute)
        return rows

    def eval_paired_quality(self, table: str, spec: Mapping[str, Any]) -> list[Result]:
        """Fidelity to the ground truth on paired sets whose LR is not DS(HR): Y-PSNR/SSIM, identity
        cosine under a recogniser no method trained against, and LR consistency |DS(SR) - x|."""
        import numpy as np

        from lrfacebench.metrics.identity import identity_cosine, lr_consistency
        from lrfacebench.metrics.psnr_ssim import measure_tensors

        if not self.data.of_role("paired"):
            return []
        rec_name = spec["recognizer"]
        embed, rec_key = self.recognizer(rec_name)
        rec_sha = self.provenance(rec_key).get("checkpoint_sha256", "")
        protocols = {"identity_cos": f"cosine;feature=embed(x)+embed(hflip(x));l2;recognizer={rec_name}"
                                     f"(sha256={rec_sha[:12]})",
                     "lr_consistency": "mean|DS(sr)-lr| per face;[0,1] units;DS=bicubic a=-0.5 x1/4"}
        metrics = spec.get("metrics", ["psnr_y", "ssim_y", "identity_cos", "lr_consistency"])
        results = []
        for test in self.data.of_role("paired"):
            hr, lr = test.faces.images.float() / 255, self.lr_input(test)
            for key in self._methods_of(spec):
                def compute(key: RunKey = key, test: TestSet = test, hr: torch.Tensor = hr,
                            lr: torch.Tensor = lr) -> list[Result]:
                    sr = self.outputs(key, test)[0]
                    fidelity = measure_tensors(sr, hr, crop_border=0)
                    per_face = {m: [x[m] for x in fidelity.per_image] for m in ("psnr_y", "ssim_y")}
                    per_face["identity_cos"] = identity_cosine(embed, sr, hr)
                    per_face["lr_consistency"] = lr_consistency(sr, lr)
                    w = self.weights(test)
                    out = []
                    for m in metrics:
                        v = np.asarray(per_face[m], dtype=np.float64)
                        protocol = protocols.get(m) or fidelity.protocol(m)
                        out.append(Result(self._row(table, test, key, metric=m, value=float(v.mean()),
                                                    std=float(v.std()), n_images=len(v),
                                                    higher_is_better=m != "lr_consistency",
                                                    protocol=f"{protocol};lr=the paired set's own LR"),
                                          key.label, _replicates(v, w)))
                    return out
                parts = {"kind": "paired_quality", "table": table, "test": test.sha256, "set": test.name,
                         "run": self.provenance(key).get("checkpoint_sha256", key.label), "key": key.label,
                         "recognizer": rec_sha or rec_name, "metrics": metrics}
                results += self.job(parts, compute)
        return results

    def eval_complexity(self, table: str, spec: Mapping[str, Any]) -> list[Result]:
        """Parameters and inference time of each method's *paper* architecture (whatever preset
        trained it: timing does not depend on the weights), and the wall time of its run."""
        from lrfacebench.methods import get_method
        from lrfacebench.metrics.complexity import model_complexity

        rows = []
        for key in self._methods_of(spec):
            def compute(key: RunKey = key) -> list[Result]:
                cls = get_method(key.method)
                paper = cls(cls.make_config("paper", key.variant), self.device).eval()
                c = model_complexity(paper.super_resolve, paper.parameter_counts(), self.device,
                                     **TIMING[self.cfg.preset])
                arch = "paper architecture, counted from code"
                dev = f"device={c['device_name']}"
                out = [self._row(table, None, key, metric="params_deployed_M", value=c["params_deployed"] / 1e6,
                                 protocol=f"deployed modules; {arch}"),
                       self._row(table, None, key, metric="params_trained_M", value=c["params_trained"] / 1e6,
                                 protocol=f"all trained modules; {arch}"),
                       self._row(table, None, key, metric="ms_per_face", value=c["ms_per_face"],
                                 protocol=f"{arch}; batch 1; {c['warmup']} warm-up; median of "
                                          f"{c['n_timed']}; {dev}"),
                       self._row(table, None, key, metric="faces_per_s", value=c["faces_per_s"],
                                 higher_is_better=True, protocol=f"{arch}; batch {c['large_batch']}; {dev}")]
                run = self.ensure_trained(key)
                if run is not None:
                    out.append(self._row(table, None, key, metric="train_hours", value=train_seconds(run) / 3600,
                                         protocol=f"wall time of the run ({PRESETS[self.cfg.preset]} preset); {dev}"))
                return [Result(row, key.label) for row in out]
            parts = {"kind": "complexity", "run": self.provenance(key).get("checkpoint_sha256", key.label),
                     "key": key.label, "device": str(self.device), "timing": TIMING[self.cfg.preset]}
            rows += self.job(parts, compute)
        return rows

    # ----- the whole benchmark -------------------------------------------------------------------
    def run(self) -> list[Row]:
        """Evaluate every selected table; write every output file; return all rows (ours + paper)."""
        from tqdm import tqdm

        io.write_json(self.out / "config.json", dataclasses.asdict(self.cfg))
        rows: list[Row] = []
        for table, spec in tqdm(self.specs.items(), desc="tables", disable=None):
            t0 = time.perf_counter()
            evaluate = getattr(self, f"eval_{spec['kind']}")
            table_rows = with_deltas(evaluate(table, spec), spec.get("compare_to", ""))
            self.timings[table] = time.perf_counter() - t0
            write_rows(self.out / f"{table}.csv", table_rows)
            rows += table_rows
            log.info("%s done in %.0f s", table, self.timings[table])
        rows += load_reported(self.specs)
        self.write_outputs(rows)
        return rows

    def write_outputs(self, rows: list[Row]) -> None:
        write_rows(self.out / "leaderboard.csv", rows)
        titles = {t: s.get("title", t) for t, s in self.specs.items()}
        md = render_markdown(merge(rows), titles)
        header = (f"# lrfacebench leaderboard\n\nPreset `{self.cfg.preset}` (training preset "
                  f"`{PRESETS[self.cfg.preset]}`), device `{self.env.get('gpu') or self.device}`, "
                  f"lrfacebench {self.env['lrfacebench']}, {dt.date.today().isoformat()}. "
                  "Rows marked *reported in paper* are the values printed in Cheng et al. (WACV 2020) "
                  "on their datasets, shown for reference only; every other value was measured by this "
                  "run. Each dataset column states its N below the table.\n\n")
        io.write_text(self.out / "LEADERBOARD.md", header + md)
        io.write_json(self.out / "env.json", {**self.env, "timings_s": self.timings})
        self.write_figures(rows)

    def write_figures(self, rows: list[Row]) -> None:
        fig_dir = self.out / "figures"
        n = self.cfg.figure_faces
        keys = [RunKey.parse(m) for m in self.specs.get("table1", {}).get("methods", [])
                if not self.cfg.methods or m.split(":")[0] in self.cfg.methods]
        for test in self.data.of_role("genuine"):
            lr = test.faces.images[:n].float() / 255
            if keys:
                cols = [("LR", lr)] + [(k.label, self.outputs(k, test)[0][:n]) for k in keys]
                figures.image_grid(cols, fig_dir / f"fig4_{test.name}.png")
            regulating = [k for k in keys if self.method(k).regulate(lr[:1].to(self.device)) is not None]
            for k in regulating:
                figures.image_grid([("genuine", lr), ("regulated", self.outputs(k, test, "regulated")[0][:n]),
                                    ("resolved", self.outputs(k, test)[0][:n])],
                                   fig_dir / f"fig5_{test.name}_{k.label.replace(':', '-')}.png")
            fids = {r.method if r.variant == "default" else f"{r.method}:{r.variant}": r.value for r in rows
                    if r.table == "table1" and r.dataset == test.name and r.metric == "fid"
                    and r.source == "reproduced"}
            if fids:
                figures.bar_plot(fids, fig_dir / f"fid_{test.name}.png", "FID (lower is better)",
                                 f"Table 1 — {test.name}")
        for path in sorted((self.out / "cmc").glob("*.json")) if (self.out / "cmc").is_dir() else []:
            test_name, rec, _ = path.stem.split("__")
            curves = {p.stem.split("__")[2]: io.read_json(p)["cmc"]
                      for p in (self.out / "cmc").glob(f"{test_name}__{rec}__*.json")}
            figures.cmc_plot(curves, fig_dir / f"cmc_{test_name}_{rec}.png", f"CMC — {test_name} ({rec})")


def run_seeds(cfg: BenchConfig, seeds: Iterable[int]) -> list[Row]:
    """The benchmark once per training seed (``OUT/seed-S``; runs, data and FID features shared),
    then every result merged into ``OUT``: mean ± std across seeds (``n_runs``) beside each
    seed's bootstrap interval (see :func:`lrfacebench.bench.leaderboard.merge`)."""
    out, seeds = Path(cfg.out), list(seeds)
    rows: list[Row] = []
    titles: dict[str, str] = {}
    for seed in seeds:
        bench = Benchmark(dataclasses.replace(cfg, seed=seed, out=str(out / f"seed-{seed}"),
                                              runs=cfg.runs or str(out / "runs"),
                                              data_dir=cfg.data_dir or str(out / "data")))
        rows += [r for r in bench.run() if r.source == "reproduced"]
        titles = {t: s.get("title", t) for t, s in bench.specs.items()}
    merged = merge(rows + load_reported(titles))
    write_rows(out / "leaderboard.csv", merged)
    io.write_text(out / "LEADERBOARD.md", f"# lrfacebench leaderboard (seeds {', '.join(map(str, seeds))})\n\n"
                  "Mean ± std across training seeds; Δ and its interval: the mean over seeds of each "
                  "seed's paired bootstrap over test faces.\n\n" + render_markdown(merged, titles))
    return merged


def _replicates(values: Iterable[float], w: Any) -> list[float] | None:
    """Bootstrap replicates of the mean of per-face ``values`` (``None`` if any is not finite,
    e.g. the infinite PSNR of an output identical to its HR face)."""
    import numpy as np

    v = np.asarray(list(values), dtype=np.float64)
    return bootstrap.mean_replicates(v, w).tolist() if np.isfinite(v).all() else None
