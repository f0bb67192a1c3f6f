"""Sharded, resumable dataset building (img2dataset style): recipe -> plan -> shards (run by a
distributor, :mod:`lrfacebench.data.distribute`: this process, a pool of workers or Ray tasks; or
spread over jobs sharing ``--out``) -> merge -> carded dataset.

Layout of ``--out``::

    plan.json             source, root, resolved config and its hash, plan hash, shard count
    shards/s00003.json    shard 3's records (kept faces, rejected candidates, unreadable inputs,
                          stats), written last by its worker: its existence means "shard done"
    crops/ lr16/ hr64/    face PNGs named by face id, written atomically by the workers
    rejected/             up to ``review_per_reason`` crops per rejection reason and shard
    manifest.csv ...      written by the merge (:func:`lrfacebench.data.merge.merge_shards`)

A build killed at any moment and restarted ends with exactly the manifest of an uninterrupted build.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

from lrfacebench import config as cfglib
from lrfacebench.data.distribute import check_distributor, distribute
from lrfacebench.data.exclusions import Exclusions
from lrfacebench.data.merge import MergeResult, merge_shards
from lrfacebench.data.plan import BuildPlan, done_shards, make_plan, shard_path
from lrfacebench.data.recipe import BuildConfig
from lrfacebench.data.worker import ShardJob
from lrfacebench.errors import BuildError
from lrfacebench.io import write_json

log = logging.getLogger(__name__)

# What a build writes into --out; --overwrite removes only these.
OUTPUTS = ("plan.json", "shards", "crops", "lr16", "hr64", "rejected", "review", "manifest.csv",
           "rejected.csv", "unreadable.csv", "pairs.csv", "stats.json", "DATASET_CARD.md", "size_histogram.png")


def claim_out(out: Path, plan: BuildPlan, cfg: BuildConfig, plan_hash: str, overwrite: bool) -> None:
    """Make ``out`` this build's directory: new, or the same plan and config (resume).

    A directory holding another build is refused unless ``overwrite``; a non-empty directory
    that holds no build at all is always refused.
    """
    meta = out / "plan.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        if old.get("plan_hash") == plan_hash and old.get("config_hash") == cfg.compat_hash():
            return
        if not overwrite:
            what = "items (inputs or --limit)" if old.get("plan_hash") != plan_hash else "config"
            raise BuildError(
                f"{out} holds a build with different {what} (plan {str(old.get('plan_hash'))[:12]}, config "
                f"{str(old.get('config_hash'))[:12]}). Use another --out, or --overwrite to discard it.")
        for name in OUTPUTS:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()):
        raise BuildError(f"{out} is not empty and holds no build (no plan.json); choose an empty --out")
    write_json(meta, {"source": plan.source, "kind": plan.kind, "root": str(plan.root), "plan_hash": plan_hash,
                      "config_hash": cfg.compat_hash(), "n_items": len(plan.items), "n_shards": plan.n_shards,
                      "shard_size": plan.shard_size, "config": cfglib.to_dict(cfg)})


def remove_temp_files(out: Path) -> int:
    """Delete ``.<name>.<random>.tmp`` files that ``io.atomic_path`` leaves when its process is killed."""
    n = 0
    for name in OUTPUTS:
        p = out / name
        for tmp in (p.rglob(".*.tmp") if p.is_dir() else []):
            tmp.unlink(missing_ok=True)
            n += 1
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    if n:
        log.info("removed %d temporary files of an interrupted run", n)
    return n


def build(cfg: BuildConfig, root: Path, out: Path, workers: int = 1, shard: tuple[int, int] = (0, 1),
          exclude: Sequence[Path] = (), overwrite: bool = False, distributor: str = "multiprocessing",
          ray_address: str | None = None) -> MergeResult | None:
    """Build (or resume) the dataset of ``cfg`` from ``root`` into ``out``.

    The shards run with ``distributor`` (:mod:`lrfacebench.data.distribute`: ``multiprocessing``
    with ``workers`` processes, or ``ray``, local with ``workers`` CPUs or at ``ray_address``).

    Returns the merge result, or ``None`` when this job (``shard=(I, N)``) finished its shards
    but others are still missing.
    """
    check_distributor(distributor)
    t0 = time.perf_counter()
    plan = make_plan(cfg, root)
    scan_s = time.perf_counter() - t0
    plan_hash = plan.digest()
    claim_out(out, plan, cfg, plan_hash, overwrite)
    saved = out / "exclusions.csv"
    exclusions, problems = Exclusions.read([saved] if saved.is_file() else [])
    if exclude:
        new, more = Exclusions.read(exclude)
        exclusions, problems = exclusions.union(new), problems + more
        exclusions.write(saved)
    for p in problems:
        log.warning("exclusion list %s line %s: %s", p.file, p.line, p.reason)
    config = cfglib.to_dict(cfg)
    i, n = shard
    if n == 1:  # alone on --out: temporary files of a killed run are garbage (other jobs may own them)
        remove_temp_files(out)
    for attempt in range(3):
        done = done_shards(out, plan.n_shards, plan_hash)
        todo = [s for s in range(plan.n_shards) if (attempt or s % n == i) and s not in done]
        jobs = [ShardJob(str(out), str(plan.root), s, plan_hash, config,
                         tuple(it.to_json() for it in plan.shard(s))) for s in todo]
        distribute(jobs, distributor, workers, ray_address)
        if len(done_shards(out, plan.n_shards, plan_hash)) < plan.n_shards:
            return None
        extra = {"timings": {"scan_s": round(scan_s, 3), "wall_s_last_run": round(time.perf_counter() - t0, 3)}}
        result = merge_shards(out, plan, cfg, plan_hash, exclusions, extra)
        if not result.redo:
            return result
        log.warning("kept faces of shard(s) %s lack their PNGs; rebuilding those shards", result.redo)
        for s in result.redo:
            shard_path(out, s).unlink(missing_ok=True)
    raise BuildError(f"shards {result.redo} still lack face PNGs after rebuilding; is {out} writable?")


def summary(result: MergeResult, out: Path, seconds: float) -> list[str]:
    """The one-screen report printed at the end of a build."""
    st = result.stats
    c = st["counts"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(c["rejected_by_reason"].items(), key=lambda kv: -kv[1]))
    size = st.get("size_summary") or {}
    lines = [
        f"built {st['dataset']} ({st['source']}, {st['kind']}) -> {out}",
        f"  inputs      {c['items']:,} items planned, {c['items_read']:,} read, {c['items_unreadable']:,} unreadable;"
        f" {c['annotation_problems']:,} annotation problems"
        + (f"; {c['items_too_large']:,} too large to search, {c['items_scales_reduced']:,} searched at fewer "
           "scales (detector.max_work_pixels)" if c.get("items_too_large") or c.get("items_scales_reduced") else ""),
        f"  candidates  {c['candidates']:,}",
        f"  kept        {c['kept']:,} faces" + (f" (avg size {size['min']}-{size['max']} px, median {size['median']})"
                                                if size else "")
        + f"; {c['faces_with_identity']:,} with identity ({c['identities']:,} identities); splits "
        + (", ".join(f"{k or '-'} {v:,}" for k, v in c["splits"].items()) or "-"),
        f"  rejected    {c['rejected']:,}" + (f": {reasons}" if reasons else ""),
        f"  unreadable  {c['unreadable_rows']:,} rows in unreadable.csv",
    ]
    for k, v in st.get("detector_eval", {}).items():
        if v["n_gt"]:
            lines.append(f"  detector    {k}: recall {v['recall']}, precision {v['precision']} "
                         f"({v['n_tp']} of {v['n_gt']} annotated faces, {v['n_det']} detections)")
    if p := st.get("pairs"):
        lines.append(f"  pairs       {p['pairs']:,} verification pairs ({p['same']:,} same person), "
                     f"{p['with_both_faces']:,} with both faces kept: pairs.csv")
    lines += [f"  time        {seconds:.1f} s this run; {st['shards']} shards",
              "  files       manifest.csv, rejected.csv, unreadable.csv, stats.json, review/, DATASET_CARD.md"]
    return lines


def describe_build_plan(cfg: BuildConfig, root: Path) -> str:
    """What a dry run shows: the resolved recipe and the plan (items, shards, annotation problems)."""
    plan = make_plan(cfg, root)
    lines = [json.dumps(cfglib.to_dict(cfg), indent=2, default=str),
             f"{plan.source} ({plan.kind}) at {plan.root}: {len(plan.items):,} items in {plan.n_shards:,} shards "
             f"of {plan.shard_size}; {len(plan.problems):,} annotation problems"
             + (f"; {len(plan.pairs):,} verification pairs" if plan.pairs else "")]
    lines += [f"  {p.file}:{p.line}: {p.reason}" for p in plan.problems[:10]]
    return "\n".join(lines)
