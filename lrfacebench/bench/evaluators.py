"""The evaluation kinds of ``tables.toml``, one function each, looked up in :data:`EVALUATORS`.

Each evaluator gets the :class:`Evaluation` of a benchmark, a table name and its spec, and returns
:class:`~lrfacebench.bench.results.Result` rows. It knows evaluation kinds and the
:class:`~lrfacebench.methods.base.Method` interface, nothing method-specific. Every unit of work is
one cached job; test faces are ``(N,3,S,S)`` float in [0,1] (uint8 levels).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from lrfacebench import io
from lrfacebench.bench.cache import OutputCache, lr_input
from lrfacebench.bench.config import TIMING, BenchConfig
from lrfacebench.bench.data import BenchData, TestSet
from lrfacebench.bench.leaderboard import Row
from lrfacebench.bench.provenance import RunKey, TrainedRuns
from lrfacebench.bench.results import JobCache, Result, mean_replicates
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.methods import get_method
from lrfacebench.metrics import bootstrap
from lrfacebench.metrics.complexity import model_complexity
from lrfacebench.metrics.fid import compute_fid, compute_kid, folder_features
from lrfacebench.metrics.identity import identity_cosine, lr_consistency
from lrfacebench.metrics.inception import InceptionFeatures, load_inception
from lrfacebench.metrics.psnr_ssim import measure_tensors
from lrfacebench.metrics.recognition import rank1_cmc
from lrfacebench.pixels import to_unit_float


def selects(names: tuple[str, ...], key: RunKey) -> bool:
    """Whether ``--methods`` entries ``names`` select ``key``: a method name selects every variant
    of it (``cr``: cr, cr:wo_cr, ...), ``NAME:VARIANT`` that variant only."""
    return key.method in names or key.label in names


class Evaluation:
    """What every evaluator uses: the config, data, runs and caches of one benchmark, how a row is
    made, the bootstrap weights of a test set and the FID network."""

    def __init__(self, cfg: BenchConfig, data: BenchData, runs: TrainedRuns, outputs: OutputCache,
                 jobs: JobCache, out: Path) -> None:
        self.cfg, self.data, self.runs, self.cache, self.job, self.out = cfg, data, runs, outputs, jobs, out
        self.device = runs.device
        self._inception: InceptionFeatures | None = None

    def methods_of(self, spec: Mapping[str, Any]) -> list[RunKey]:
        """The table's methods, restricted to ``cfg.methods`` when it names any."""
        keys = [RunKey.parse(m) for m in spec.get("methods", [])]
        return [k for k in keys if not self.cfg.methods or selects(self.cfg.methods, k)]

    def run_id(self, key: RunKey) -> str:
        """What identifies a trained model in a job description: its checkpoint, else its label."""
        return self.runs.checkpoint(key) or key.label

    def weights(self, test: TestSet) -> np.ndarray:
        """``(R,N)`` bootstrap weights over the faces of ``test``, shared by every method on it."""
        return bootstrap.weights(len(test), self.cfg.bootstrap, seed=self.cfg.seed)

    def row(self, table: str, test: TestSet | None, key: RunKey | None, label: str | None = None,
            **values: Any) -> Row:
        """A leaderboard row of ``key`` (or of ``label``) on ``test`` with its provenance fields."""
        std = values.pop("std", None)
        protocol = values.pop("protocol", "")
        if test is not None and test.note:
            protocol = f"{protocol};{test.note}" if protocol else test.note
        return Row(table=table, dataset=test.name if test else "-", split=test.split if test else "",
                   method=label or (key.method if key else ""),
                   # the resolved variant: e.g. SRGAN's default is "mse_adv", a stated deviation
                   variant=self.runs.method(key).config.variant if key else "default",
                   std=math.nan if std is None else float(std), protocol=protocol,
                   **values, **self.runs.provenance(key))

    def inception(self) -> InceptionFeatures:
        if self._inception is None:
            self._inception = load_inception(self.cfg.fid_mode, self.cfg.inception or None, str(self.device))
        return self._inception

    def distribution_rows(self, table: str, test: TestSet, key: RunKey | None, folder: Path,
                          reference: Path, metrics: Iterable[str], label: str | None = None,
                          metric_names: Mapping[str, str] | None = None) -> list[Result]:
        """FID/KID of the images in ``folder`` (face i of ``test`` in file i) against ``reference``;
        ``std`` and the replicates are the bootstrap over the test faces (reference fixed)."""
        feats = folder_features(folder, self.inception()).feats
        ref_feats = folder_features(reference, self.inception()).feats
        w = self.weights(test)
        results = []
        for metric in metrics:
            fn, replicate = {"fid": (compute_fid, bootstrap.fid_replicates),
                             "kid": (compute_kid, bootstrap.kid_replicates)}[metric]
            r = fn(folder, reference, net=self.inception(), mode=self.cfg.fid_mode, device=str(self.device))
            reps = replicate(feats, ref_feats, w)
            row = self.row(table, test, key, label, metric=(metric_names or {}).get(metric, metric),
                           value=r.value, std=float(reps.std()), n_images=r.n_images, higher_is_better=False,
                           protocol=f"{r.protocol};std=bootstrap({len(w)}) over test faces;"
                                    f"reference={self.data.reference.name}(N={r.n_reference})")
            results.append(Result(row, label or key.label, reps.tolist()))
        return results


def sr_fid(ev: Evaluation, table: str, spec: Mapping[str, Any]) -> list[Result]:
    """FID/KID of the SR outputs of each genuine-LR test set against the HR reference."""
    ref = ev.cache.image_folder(f"{ev.data.reference.name}-reference-hr64", ev.data.reference.faces.images)
    rows = []
    for test in ev.data.of_role("genuine"):
        for key in ev.methods_of(spec):
            parts = {"kind": "sr_fid", "table": table, "test": test.sha256, "set": test.name,
                     "run": ev.run_id(key), "key": key.label, "metrics": spec.get("metrics", ["fid"]),
                     "mode": ev.cfg.fid_mode, "reference": ev.data.reference.sha256}
            rows += ev.job(parts, lambda: ev.distribution_rows(
                table, test, key, ev.cache.outputs(key, test)[1], ref, spec.get("metrics", ["fid"])))
    return rows


def lr_fid(ev: Evaluation, table: str, spec: Mapping[str, Any]) -> list[Result]:
    """FID/KID of genuine LR, and of the LR each method regulates it into, against A-LR = DS(reference)."""
    ref_hr = to_unit_float(ev.data.reference.faces.images)
    a_lr = ev.cache.image_folder(f"{ev.data.reference.name}-reference-ds16", to_uint8(downsample(ref_hr)))
    rows = []
    names = {"fid": "fid_vs_artificial_lr", "kid": "kid_vs_artificial_lr"}
    for test in ev.data.of_role("genuine"):
        g_lr = ev.cache.image_folder(f"{test.name}-lr16", test.faces.images)
        parts = {"kind": "lr_fid", "table": table, "test": test.sha256, "set": test.name,
                 "reference": ev.data.reference.sha256, "mode": ev.cfg.fid_mode}
        rows += ev.job(parts, lambda: ev.distribution_rows(
            table, test, None, g_lr, a_lr, ("fid", "kid"), "genuine-lr", names))
        for key in ev.methods_of(spec):
            run_parts = {**parts, "run": ev.runs.checkpoint(key), "key": key.label}
            rows += ev.job(run_parts, lambda: ev.distribution_rows(
                table, test, key, ev.cache.outputs(key, test, "regulated")[1], a_lr, ("fid", "kid"),
                None, names))
    return rows


def rank1(ev: Evaluation, table: str, spec: Mapping[str, Any]) -> list[Result]:
    """Rank-1/CMC on the SR outputs of each identity-labelled test set with each recogniser."""
    rows = []
    for rec_name in spec["recognizers"]:
        embed, rec_key = ev.runs.recognizer(rec_name)
        rec_sha = ev.runs.checkpoint(rec_key) or ""
        for test in ev.data.of_role("identity"):
            labels = [test.faces.identities[i] if i >= 0 else "" for i in test.faces.identity.tolist()]
            for key in ev.methods_of(spec):
                def compute(key: RunKey = key, test: TestSet = test) -> list[Result]:
                    sr, _ = ev.cache.outputs(key, test)
                    r = rank1_cmc(embed, sr, labels, trials=ev.cfg.trials, seed=ev.cfg.seed)
                    row = ev.row(table, test, key, metric="rank1", value=100 * r.rank1_mean,
                                 std=100 * r.rank1_std, n_images=r.n_faces, higher_is_better=True,
                                 protocol=f"{r.protocol};percent;recognizer={rec_name}(sha256={rec_sha[:12]})")
                    io.write_json(ev.out / "cmc" / f"{test.name}__{rec_name}__{key.label}.json",
                                  {"cmc": r.cmc, "n_identities": r.n_identities, "n_probes": r.n_probes})
                    return [Result(row, key.label)]
                parts = {"kind": "rank1", "table": table, "test": test.sha256, "set": test.name,
                         "recognizer": rec_sha or rec_name, "run": ev.run_id(key), "key": key.label,
                         "trials": ev.cfg.trials, "seed": ev.cfg.seed}
                rows += ev.job(parts, compute)
    return rows


def sr_psnr_ssim(ev: Evaluation, table: str, spec: Mapping[str, Any]) -> list[Result]:
    """Y/RGB PSNR and SSIM of the SR outputs of artificial LR (DS(HR)) against HR."""
    rows = []
    for test in ev.data.of_role("artificial"):
        hr = to_unit_float(test.faces.images)
        for key in ev.methods_of(spec):
            def compute(key: RunKey = key, test: TestSet = test) -> list[Result]:
                result = measure_tensors(ev.cache.outputs(key, test)[0], hr, crop_border=0)
                w = ev.weights(test)
                return [Result(ev.row(table, test, key, metric=d["metric"], value=d["value"], std=d["std"],
                                      n_images=d["n_images"], higher_is_better=True,
                                      protocol=f"{d['protocol']};lr=DS(hr) bicubic a=-0.5 x1/4"),
                               key.label, mean_replicates([x[d["metric"]] for x in result.per_image], w))
                        for d in result.rows()]
            parts = {"kind": "sr_psnr_ssim", "table": table, "test": test.sha256, "set": test.name,
                     "run": ev.run_id(key), "key": key.label}
            rows += ev.job(parts, compute)
    return rows


def paired_quality(ev: Evaluation, table: str, spec: Mapping[str, Any]) -> list[Result]:
    """Fidelity to the ground truth on paired sets whose LR is not DS(HR): Y-PSNR/SSIM, identity
    cosine under a recogniser no method trained against, and LR consistency |DS(SR) - x|."""
    if not ev.data.of_role("paired"):
        return []
    rec_name = spec["recognizer"]
    embed, rec_key = ev.runs.recognizer(rec_name)
    rec_sha = ev.runs.checkpoint(rec_key) or ""
    protocols = {"identity_cos": f"cosine;feature=embed(x)+embed(hflip(x));l2;recognizer={rec_name}"
                                 f"(sha256={rec_sha[:12]})",
                 "lr_consistency": "mean|DS(sr)-lr| per face;[0,1] units;DS=bicubic a=-0.5 x1/4"}
    metrics = spec.get("metrics", ["psnr_y", "ssim_y", "identity_cos", "lr_consistency"])
    results = []
    for test in ev.data.of_role("paired"):
        hr, lr = to_unit_float(test.faces.images), lr_input(test)
        for key in ev.methods_of(spec):
            def compute(key: RunKey = key, test: TestSet = test, hr: torch.Tensor = hr,
                        lr: torch.Tensor = lr) -> list[Result]:
                sr = ev.cache.outputs(key, test)[0]
                fidelity = measure_tensors(sr, hr, crop_border=0)
                per_face = {m: [x[m] for x in fidelity.per_image] for m in ("psnr_y", "ssim_y")}
                per_face["identity_cos"] = identity_cosine(embed, sr, hr)
                per_face["lr_consistency"] = lr_consistency(sr, lr)
                w = ev.weights(test)
                out = []
                for m in metrics:
                    v = np.asarray(per_face[m], dtype=np.float64)
                    protocol = protocols.get(m) or fidelity.protocol(m)
                    out.append(Result(ev.row(table, test, key, metric=m, value=float(v.mean()),
                                             std=float(v.std()), n_images=len(v),
                                             higher_is_better=m != "lr_consistency",
                                             protocol=f"{protocol};lr=the paired set's own LR"),
                                      key.label, mean_replicates(v, w)))
                return out
            parts = {"kind": "paired_quality", "table": table, "test": test.sha256, "set": test.name,
                     "run": ev.run_id(key), "key": key.label, "recognizer": rec_sha or rec_name,
                     "metrics": metrics}
            results += ev.job(parts, compute)
    return results


def complexity(ev: Evaluation, table: str, spec: Mapping[str, Any]) -> list[Result]:
    """Parameters and inference time of each method's *paper* architecture (whatever preset
    trained it: timing does not depend on the weights), and the wall time of its run."""
    rows = []
    for key in ev.methods_of(spec):
        def compute(key: RunKey = key) -> list[Result]:
            cls = get_method(key.method)
            paper = cls(cls.make_config("paper", key.variant), ev.device).eval()
            c = model_complexity(paper.super_resolve, paper.parameter_counts(), ev.device,
                                 **TIMING[ev.cfg.preset])
            arch = "paper architecture, counted from code"
            dev = f"device={c['device_name']}"
            out = [ev.row(table, None, key, metric="params_deployed_M", value=c["params_deployed"] / 1e6,
                          protocol=f"deployed modules; {arch}"),
                   ev.row(table, None, key, metric="params_trained_M", value=c["params_trained"] / 1e6,
                          protocol=f"all trained modules; {arch}"),
                   ev.row(table, None, key, metric="ms_per_face", value=c["ms_per_face"],
                          protocol=f"{arch}; batch 1; {c['warmup']} warm-up; median of {c['n_timed']}; {dev}"),
                   ev.row(table, None, key, metric="faces_per_s", value=c["faces_per_s"],
                          higher_is_better=True, protocol=f"{arch}; batch {c['large_batch']}; {dev}")]
            w = ev.runs.weights(key)
            if w.train_seconds is not None:
                out.append(ev.row(table, None, key, metric="train_hours", value=w.train_seconds / 3600,
                                  protocol=f"training time ({w.preset} preset); device={w.train_device}"))
            return [Result(row, key.label) for row in out]
        parts = {"kind": "complexity", "run": ev.run_id(key), "key": key.label, "device": str(ev.device),
                 "timing": TIMING[ev.cfg.preset]}
        rows += ev.job(parts, compute)
    return rows


EVALUATORS: dict[str, Callable[[Evaluation, str, Mapping[str, Any]], list[Result]]] = {
    "sr_fid": sr_fid, "lr_fid": lr_fid, "rank1": rank1, "sr_psnr_ssim": sr_psnr_ssim,
    "paired_quality": paired_quality, "complexity": complexity,
}
