"""The merge of a build: every done shard combined into the dataset's tables (and ``pairs.csv``
for a source with verification pairs), review sheets, ``stats.json`` and card; ``manifest.csv`` is
written last, so its presence means "dataset complete"."""
from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrfacebench.data.cards import write_card
from lrfacebench.data.exclusions import Exclusions
from lrfacebench.data.filters import FilterConfig, near_duplicates
from lrfacebench.data.manifest import (IMAGE_COLUMNS, PAIR_COLUMNS, REJECTED_COLUMNS, UNREADABLE_COLUMNS,
                                       manifest_columns, write_csv)
from lrfacebench.data.plan import BuildPlan, load_shards
from lrfacebench.data.recipe import BuildConfig
from lrfacebench.data.review import write_review
from lrfacebench.data.sources.base import Pair, Problem
from lrfacebench.data.stats import build_stats
from lrfacebench.data.tracks import track_drops, track_ids
from lrfacebench.io import write_json


def lr_thumbs(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """``{face_id: 16x16 LR image}`` (RGB uint8) of every face the shards' filters kept, as the
    shard records store them (so faces a previous merge deleted still count)."""
    out = {}
    for rec in records:
        for fid, b64 in rec["thumbs"].items():
            a = np.frombuffer(base64.b64decode(b64), np.uint8)
            out[fid] = a.reshape(math.isqrt(a.size // 3), -1, 3).copy()
    return out


def window_duplicates(records: list[dict[str, Any]], thumbs: dict[str, np.ndarray], fcfg: FilterConfig,
                      window: int) -> dict[str, str]:
    """``{face_id: earlier face_id}`` for faces that near-duplicate a face of the ``window``
    preceding shards (the same face across video frames or repeated photos cut by a shard border).

    Each shard is compared with the faces its own filters kept in the previous shards (their
    16x16 LR ``thumbs``), and the answer depends only on shard outputs, never on scheduling.
    Duplicates inside a shard were already removed by the shard's filters; repeats further apart
    in the plan are not searched.
    """
    if not fcfg.dedupe or window < 1:
        return {}
    dups: dict[str, str] = {}
    for s in range(1, len(records)):
        if not records[s]["kept"]:
            continue
        prev = [r for p in range(max(0, s - window), s) for r in records[p]["kept"]]
        if not prev:
            continue
        found = near_duplicates([thumbs[r["face_id"]] for r in prev + records[s]["kept"]], fcfg)[len(prev):]
        for row, j in zip(records[s]["kept"], found):
            if j is not None and j < len(prev):
                dups[row["face_id"]] = prev[j]["face_id"]
    return dups


def pair_rows(pairs: list[Pair], final: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``pairs.csv`` rows: each pair with the face ids of its two items' faces (the items of a source
    with pairs are pre-cropped faces, one face per source file; ``""`` where it was not kept)."""
    face = {r["source"]: r["face_id"] for r in final}
    return [{"pair": n, "same": int(p.same), "face_a": face.get(p.a, ""), "face_b": face.get(p.b, ""),
             "source_a": p.a, "source_b": p.b, "ref": p.ref} for n, p in enumerate(pairs)]


@dataclass
class MergeResult:
    """Outcome of :func:`merge_shards`: the final manifest rows and stats, or shards to redo first."""

    manifest: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    redo: list[int] = field(default_factory=list)


def merge_shards(out: Path, plan: BuildPlan, cfg: BuildConfig, plan_hash: str, exclusions: Exclusions,
          extra_stats: dict[str, Any]) -> MergeResult:
    """Combine every done shard into the dataset files; ``manifest.csv`` is written last.

    Drops cross-shard near-duplicates (:func:`window_duplicates`; with ``tracks.enabled``,
    :func:`lrfacebench.data.tracks.track_ids` links the faces into tracks instead, and
    :func:`~lrfacebench.data.tracks.track_drops` drops near-duplicates within a track and faces
    over the per-track cap) and excluded faces (their PNGs are deleted; they go to
    ``rejected.csv`` with reasons ``near_duplicate``/``track_cap``/``excluded``).
    When a kept face's PNG is missing (deleted by hand, or un-excluded after a previous merge
    deleted it) nothing is written and the shards to rebuild are returned in ``redo``.
    """
    t0 = time.perf_counter()
    records = load_shards(out, plan.n_shards)
    thumbs = lr_thumbs(records)
    kept_all = [r for rec in records for r in rec["kept"]]
    shard_rejects = [r for rec in records for r in rec["rejected"]]
    if cfg.tracks.enabled:
        tracks = track_ids(plan.items, kept_all + shard_rejects, cfg.tracks)
        drops = track_drops(kept_all, tracks, thumbs, cfg.filters, cfg.tracks)
        for r in kept_all + shard_rejects:
            r["track_id"] = tracks.get(r["face_id"], "")
            if r["track_id"] and cfg.tracks.identity_from_track and "identity" in r and not r["identity"]:
                r["identity"] = f"track:{r['track_id']}"  # the LR-DukeMTMC rule: annotated identity, else the track
    else:
        drops = {fid: ("near_duplicate", f"duplicates {j}")
                 for fid, j in window_duplicates(records, thumbs, cfg.filters, cfg.build.dedupe_window).items()}
    excluded = exclusions.match(kept_all)
    final = [r for r in kept_all if r["face_id"] not in drops and r["face_id"] not in excluded]
    redo = sorted({int(r["face_id"][1:6]) for r in final
                   if any(r[c] and not (out / r[c]).is_file() for c in IMAGE_COLUMNS)})
    if redo:
        return MergeResult(redo=redo)
    merged_rejects = []
    for r in kept_all:
        fid = r["face_id"]
        if fid in drops or fid in excluded:
            for c in IMAGE_COLUMNS:
                if r[c]:
                    (out / r[c]).unlink(missing_ok=True)
            reason, detail = drops.get(fid) or ("excluded", "reviewer exclusion list")
            merged_rejects.append({**r, "candidate": fid, "reason": reason, "crop": "", "detail": detail})
    rejected = sorted(shard_rejects + merged_rejects, key=lambda r: r["candidate"])
    unreadable = list(plan.problems) + [Problem(*p) for rec in records for p in rec["unreadable"]]
    write_csv(out / "rejected.csv", REJECTED_COLUMNS, rejected)
    write_csv(out / "unreadable.csv", UNREADABLE_COLUMNS, unreadable)
    write_review(out, final, rejected, cfg.build)
    stats = build_stats(plan, cfg, plan_hash, records, final, rejected, unreadable, exclusions, extra_stats)
    if plan.pairs:
        pairs = pair_rows(plan.pairs, final)
        write_csv(out / "pairs.csv", PAIR_COLUMNS, pairs)
        stats["pairs"] = {"pairs": len(pairs), "same": sum(r["same"] for r in pairs),
                          "with_both_faces": sum(bool(r["face_a"] and r["face_b"]) for r in pairs)}
    stats["timings"]["merge_s"] = round(time.perf_counter() - t0, 3)
    write_json(out / "stats.json", stats)
    write_card(out)
    write_csv(out / "manifest.csv", manifest_columns(plan.source), final)
    return MergeResult(manifest=final, stats=stats)
