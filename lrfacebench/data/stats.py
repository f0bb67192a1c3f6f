"""``stats.json`` of a build: counts per stage, face-size histograms, the detector's recall and
precision on annotated faces, timings, the config, versions and source hashes.

Sizes are the average ``(w+h)/2`` of a face box in original pixels, counted in 1-px bins keyed
by the bin's lower edge (``"12"`` counts sizes in [12, 13)).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

import numpy as np

from lrfacebench import config as cfglib
from lrfacebench.data.exclusions import Exclusions
from lrfacebench.data.plan import BuildPlan
from lrfacebench.data.recipe import BuildConfig
from lrfacebench.data.sources.base import Problem
from lrfacebench.io import sha256_file, sha256_json
from lrfacebench.runtime import environment, resolve_device


def histogram(sizes: Iterable[float]) -> dict[str, int]:
    """Sparse histogram of average face sizes in 1-px bins: ``{"12": n}`` counts sizes in [12, 13)."""
    h = Counter(str(int(s)) for s in sizes)
    return dict(sorted(h.items(), key=lambda kv: int(kv[0])))


def add_histograms(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """The sum of two :func:`histogram` results."""
    c = Counter(a)
    c.update(b)
    return dict(sorted(c.items(), key=lambda kv: int(kv[0])))


def build_stats(plan: BuildPlan, cfg: BuildConfig, plan_hash: str, records: list[dict[str, Any]],
                final: list[dict[str, Any]], rejected: list[dict[str, Any]], unreadable: list[Problem],
                exclusions: Exclusions, extra: dict[str, Any]) -> dict[str, Any]:
    """``stats.json``: counts per stage, size histograms, detector evaluation, timings, config,
    versions and source hashes."""
    counts: Counter[str] = Counter()
    timings: Counter[str] = Counter()
    evals: dict[str, Counter[str]] = defaultdict(Counter)
    sizes: dict[str, dict[str, int]] = {"candidates": {}, "kept_in_shards": {}}
    inputs: dict[str, str] = {}
    for rec in records:
        counts.update(rec["stats"]["counts"])
        timings.update(rec["stats"]["timings"])
        for k, v in rec["stats"]["detector_eval"].items():
            evals[k].update(v)
        for k, src in (("candidates", "candidates"), ("kept_in_shards", "kept")):
            sizes[k] = add_histograms(sizes[k], rec["sizes"][src])
        inputs.update(rec["inputs"])
    by_reason = Counter(r["reason"] for r in rejected)
    identities = Counter(r["identity"] for r in final if r["identity"])
    try:
        device = resolve_device(cfg.detector.device)
    except ValueError:
        device = None
    return {
        "dataset": cfg.name, "source": plan.source, "kind": plan.kind, "root": str(plan.root),
        "counts": {
            "items": len(plan.items), "items_read": counts["items"] - counts["items_unreadable"],
            "items_unreadable": counts["items_unreadable"], "items_too_large": counts["items_too_large"],
            "items_scales_reduced": counts["items_scales_reduced"], "frames_vfr": counts["frames_vfr"],
            "annotation_problems": len(plan.problems),
            "unreadable_rows": len(unreadable), "candidates": counts["candidates"],
            "kept_in_shards": sum(len(rec["kept"]) for rec in records), "kept": len(final),
            "rejected": sum(by_reason.values()), "rejected_by_reason": dict(sorted(by_reason.items())),
            "identities": len(identities), "faces_with_identity": sum(identities.values()),
            "identities_with_2_faces": sum(1 for v in identities.values() if v >= 2),
            "splits": dict(sorted(Counter(r["split"] for r in final).items())),
            "sources_with_faces": len({r["source"] for r in final}),
        },
        "size_histogram": {"note": "faces per 1-px bin of the average size (w+h)/2 in px: key 12 = [12, 13)",
                           "kept": histogram((float(r["width"]) + float(r["height"])) / 2 for r in final),
                           **sizes},
        "size_summary": _size_summary(final, cfg.build.lr_size),
        "tracks": _track_summary(final, rejected) if cfg.tracks.enabled else {},
        "detector_eval": {k: _rates(v) for k, v in sorted(evals.items())},
        "timings": {**{k: round(v, 3) for k, v in sorted(timings.items())}, **extra.get("timings", {})},
        "config": cfglib.to_dict(cfg), "config_hash": cfg.compat_hash(), "plan_hash": plan_hash,
        "shards": plan.n_shards, "exclusions": len(exclusions),
        "environment": environment(device),
        "source_hashes": {
            "annotations": {(f.relative_to(plan.root).as_posix() if f.is_relative_to(plan.root) else str(f)):
                            sha256_file(f) for f in plan.files},
            "inputs_sha256": sha256_json(sorted(inputs.items())), "n_inputs_hashed": len(inputs),
        },
    }


def _size_summary(rows: list[dict[str, Any]], lr_size: int) -> dict[str, float]:
    """Average box size (min, median, mean, max, px) and ``shrunk_share``: the share of faces whose
    square crop (side = the box's larger side, rounded as ``filters.crop_rect``) is larger than
    ``lr_size``, i.e. whose LR face was shrunk by the antialiased bicubic that DS also uses."""
    if not rows:
        return {}
    w, h = (np.array([float(r[k]) for r in rows]) for k in ("width", "height"))
    s = (w + h) / 2
    side = np.maximum(1, np.floor(np.maximum(w, h) + 0.5))
    return {"min": round(float(s.min()), 2), "median": round(float(np.median(s)), 2),
            "mean": round(float(s.mean()), 2), "max": round(float(s.max()), 2),
            "shrunk_share": round(float((side > lr_size).mean()), 4)}


def _track_summary(final: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """Tracks of a build: how many hold kept faces, kept faces per track (min, median, max), how
    many hold >= 2, all tracks (also those of rejected candidates only) and the identities the
    tracks gave (``track:<track_id>``)."""
    per = Counter(r["track_id"] for r in final if r["track_id"])
    n = sorted(per.values())
    every = set(per) | {r["track_id"] for r in rejected if r.get("track_id")}
    return {"tracks_with_faces": len(per), "tracks_with_2_faces": sum(v >= 2 for v in n),
            "faces_per_track": {"min": n[0], "median": float(np.median(n)), "max": n[-1]} if n else {},
            "tracks": len(every),
            "identities_from_tracks": len({r["identity"] for r in final if r["identity"].startswith("track:")})}


def _rates(c: Counter[str]) -> dict[str, Any]:
    n_gt, n_det, n_tp = c["n_gt"], c["n_det"], c["n_tp"]
    return {"n_gt": n_gt, "n_det": n_det, "n_tp": n_tp,
            "recall": round(n_tp / n_gt, 4) if n_gt else None,
            "precision": round(n_tp / n_det, 4) if n_det else None}
