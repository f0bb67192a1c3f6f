"""``lrfb build-dataset``: recipe -> plan -> shards (resumable, parallel) -> merge -> carded dataset.

Heavy modules (torch, the detector, the shard worker) are imported inside functions so that
``lrfb --help`` stays instant.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import click

if TYPE_CHECKING:
    from lrfacebench.data.shards import BuildConfig, MergeResult, Plan

log = logging.getLogger(__name__)

SOURCE_NAMES = ("pipa", "dukemtmc", "widerface", "celeba", "helen", "folder", "video", "sample", "degraded",
                "degraded_scenes")
# What a build writes into --out; --overwrite removes only these.
OUTPUTS = ("plan.json", "shards", "crops", "lr16", "hr64", "rejected", "review", "manifest.csv",
           "rejected.csv", "unreadable.csv", "stats.json", "DATASET_CARD.md", "size_histogram.png")


def load_recipe(name: str) -> dict[str, Any]:
    """The packaged recipe ``pipelines/<name>.toml`` as a dict."""
    from lrfacebench.config import tomllib

    res = resources.files("lrfacebench.pipelines").joinpath(f"{name}.toml")
    if not res.is_file():
        raise click.ClickException(f"no recipe pipelines/{name}.toml in the installed package")
    return tomllib.loads(res.read_text(encoding="utf-8"))


def resolve_config(source: str, config_file: Path | None = None, overrides: Sequence[str] = (),
                   limit: int | None = None, device: str | None = None,
                   seed: int | None = None) -> "BuildConfig":
    """Recipe of ``source`` <- ``--config`` file <- ``-o key=value`` <- ``--limit``/``--device``/``--seed``.

    ``seed`` sets ``source.seed``; a source without one (no randomness) is a ``ValueError``.
    """
    from lrfacebench import config as cfglib
    from lrfacebench.data.shards import BuildConfig
    from lrfacebench.data.sources import get_source

    layers = [load_recipe(source)]
    if config_file is not None:
        layers.append(cfglib.load_file(config_file))
    layers.append(cfglib.parse_overrides(list(overrides)))
    cli: dict[str, Any] = {}
    if limit is not None:
        cli["build"] = {"limit": limit}
    if device is not None:
        cli["detector"] = {"device": device}
    layers.append(cli)
    cfg = cfglib.resolve(BuildConfig, *layers)
    if seed is not None:
        name = cfg.source.get("name", cfg.name)
        if "seed" not in {f.name for f in dataclasses.fields(get_source(name).Options)}:
            raise ValueError(f"--seed: source {name!r} draws nothing at random and has no seed "
                             "(degraded and degraded_scenes have one)")
        cfg.source["seed"] = seed
    cfg.reader_options()  # validate the [source] table now, with the reader's own error messages
    return cfg


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ``None`` -> (0, 1)."""
    if not spec:
        return 0, 1
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected I/N (e.g. 0/4), got {spec!r}", param_hint="--shard") from None
    if not 0 <= i < n:
        raise click.BadParameter(f"need 0 <= I < N, got {spec}", param_hint="--shard")
    return i, n


def claim_out(out: Path, plan: "Plan", cfg: "BuildConfig", plan_hash: str, overwrite: bool) -> None:
    """Make ``out`` this build's directory: new, or the same plan and config (resume).

    A directory holding another build is refused unless ``overwrite``; a non-empty directory
    that holds no build at all is always refused.
    """
    from lrfacebench import config as cfglib
    from lrfacebench.io import write_json

    meta = out / "plan.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        if old.get("plan_hash") == plan_hash and old.get("config_hash") == cfg.compat_hash():
            return
        if not overwrite:
            what = "items (inputs or --limit)" if old.get("plan_hash") != plan_hash else "config"
            raise click.ClickException(
                f"{out} holds a build with different {what} (plan {str(old.get('plan_hash'))[:12]}, config "
                f"{str(old.get('config_hash'))[:12]}). Use another --out, or --overwrite to discard it.")
        for name in OUTPUTS:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty and holds no build (no plan.json); choose an empty --out")
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


def run_shards(jobs: list[Any], workers: int, total_items: int) -> None:
    """Run shard jobs in this process (``workers == 1``) or in a spawn pool, one detector per process."""
    from tqdm import tqdm

    from lrfacebench.data.shards import run_shard

    with tqdm(total=total_items, unit="img", desc="build", file=sys.stderr, disable=None) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                run_shard(job, bar.update)
            return
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // workers)
        with mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_init_worker,
                                           initargs=(threads,)) as pool:
            for summary in pool.imap_unordered(run_shard, jobs):
                bar.update(summary["items"])


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), threads))


def build(cfg: "BuildConfig", root: Path, out: Path, workers: int = 1, shard: tuple[int, int] = (0, 1),
          exclude: Sequence[Path] = (), overwrite: bool = False) -> "MergeResult | None":
    """Build (or resume) the dataset of ``cfg`` from ``root`` into ``out``.

    Returns the merge result, or ``None`` when this job (``shard=(I, N)``) finished its shards
    but others are still missing.
    """
    from lrfacebench import config as cfglib
    from lrfacebench.data.shards import Exclusions, ShardJob, done_shards, make_plan, merge, shard_path

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
        run_shards(jobs, workers, sum(len(j.items) for j in jobs))
        if len(done_shards(out, plan.n_shards, plan_hash)) < plan.n_shards:
            return None
        extra = {"timings": {"scan_s": round(scan_s, 3), "wall_s_last_run": round(time.perf_counter() - t0, 3)}}
        result = merge(out, plan, cfg, plan_hash, exclusions, extra)
        if not result.redo:
            return result
        log.warning("kept faces of shard(s) %s lack their PNGs; rebuilding those shards", result.redo)
        for s in result.redo:
            shard_path(out, s).unlink(missing_ok=True)
    raise click.ClickException(f"shards {result.redo} still lack face PNGs after rebuilding; is {out} writable?")


def summary(result: "MergeResult", out: Path, seconds: float) -> list[str]:
    """The one-screen report printed at the end of a build."""
    st = result.stats
    c = st["counts"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(c["rejected_by_reason"].items(), key=lambda kv: -kv[1]))
    size = st.get("size_summary") or {}
    lines = [
        f"built {st['dataset']} ({st['source']}, {st['kind']}) -> {out}",
        f"  inputs      {c['items']:,} items planned, {c['items_read']:,} read, {c['items_unreadable']:,} unreadable;"
        f" {c['annotation_problems']:,} annotation problems",
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
    lines += [f"  time        {seconds:.1f} s this run; {st['shards']} shards",
              "  files       manifest.csv, rejected.csv, unreadable.csv, stats.json, review/, DATASET_CARD.md"]
    return lines


@click.command("build-dataset")
@click.argument("source", type=click.Choice(SOURCE_NAMES))
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder in the source's official layout (a video file or folder for `video`). "
                   "Not needed for `sample`.")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder; rerun the same command to resume an interrupted build.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Worker processes on this machine (one detector each).")
@click.option("--shard", "shard_spec", default=None, metavar="I/N",
              help="Build only shards s with s % N == I (spread one build over jobs sharing --out).")
@click.option("--limit", type=click.IntRange(0), default=None, help="Only the first N photos/frames (quick runs).")
@click.option("--device", default=None, help="Detector device: auto, cpu, cuda or cuda:N [recipe: auto].")
@click.option("--seed", type=int, default=None,
              help="Seed of sources that draw at random (degraded: the degradation of each face) [recipe: 0].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML/JSON file overriding the recipe.")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one recipe value, e.g. -o filters.max_avg_size=20 -o source.stride=30.")
@click.option("--exclude", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Reviewer exclusion list (face ids, or source+box rows); kept in OUT/exclusions.csv.")
@click.option("--overwrite", is_flag=True, help="Discard a previous build in --out made with other settings.")
@click.option("--dry-run", is_flag=True, help="Read the source, print the plan and the resolved recipe, build nothing.")
def build_dataset_command(source: str, root: Path | None, out: Path, workers: int, shard_spec: str | None,
                          limit: int | None, device: str | None, seed: int | None, config_file: Path | None,
                          overrides: tuple[str, ...], exclude: tuple[Path, ...], overwrite: bool,
                          dry_run: bool) -> None:
    """Detect tiny faces in photos or video (or crop paired HR/LR sets) into a carded dataset.

    \b
    SOURCE: pipa, dukemtmc, widerface (genuine-LR faces of average size <= 16 px found by a
    tiny-face detector), celeba, helen (64x64 HR + 16x16 LR = DS(HR) pairs), folder, video
    (any images or videos), sample (the embedded sample; no --root needed), degraded (HR
    faces of any folder, a built paired set or the sample + a seeded real-world degradation
    chain as LR, parameters per face in the manifest), degraded_scenes (photos shrunk until
    their faces are 8-16 px and JPEG-stored, faces detected there, HR cut from the original).
    Settings come from the recipe pipelines/SOURCE.toml, then --config, then -o KEY=VALUE.

    \b
    Writes into OUT: manifest.csv (one row per kept face), crops/ (native size), lr16/,
    hr64/ (paired sets), rejected.csv (candidate, reason), unreadable.csv (file, line,
    reason), stats.json, review/*.jpg contact sheets, DATASET_CARD.md, size_histogram.png.
    A killed build resumes where it stopped when the same command is run again.

    \b
    Examples:
      lrfb build-dataset sample --out lrfb-data/sample
      lrfb build-dataset pipa --root /data/PIPA --out lrfb-data/lr-pipa --workers 4
      lrfb build-dataset video --root clip.mp4 --out lrfb-data/clip -o source.stride=10
      lrfb build-dataset degraded --root lrfb-data/helen --out lrfb-data/helen-degraded --seed 1
      lrfb build-dataset pipa --root /data/PIPA --out lrfb-data/lr-pipa --exclude review-decisions.csv
    """
    from lrfacebench.data.sources.base import LayoutError

    t0 = time.perf_counter()
    if root is None:
        if source != "sample":
            raise click.UsageError(f"--root is required for {source}")
        from lrfacebench.data.sources.sample import default_root

        root = default_root()
    if not root.exists():
        raise click.BadParameter(f"{root} does not exist", param_hint="--root")
    try:
        cfg = resolve_config(source, config_file, overrides, limit, device, seed)
        if dry_run:
            _dry_run(cfg, root)
            return
        result = build(cfg, root, out, workers, parse_shard(shard_spec), exclude, overwrite)
    except (LayoutError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    if result is None:
        click.echo(f"shard job {shard_spec} finished its shards; the merge runs when the last job finishes "
                   f"(or run the command again without --shard). Output: {out}")
        return
    for line in summary(result, out, time.perf_counter() - t0):
        click.echo(line)


def _dry_run(cfg: "BuildConfig", root: Path) -> None:
    from lrfacebench import config as cfglib
    from lrfacebench.data.shards import make_plan

    plan = make_plan(cfg, root)
    click.echo(json.dumps(cfglib.to_dict(cfg), indent=2, default=str))
    click.echo(f"{plan.source} ({plan.kind}) at {plan.root}: {len(plan.items):,} items in {plan.n_shards:,} shards "
               f"of {plan.shard_size}; {len(plan.problems):,} annotation problems")
    for p in plan.problems[:10]:
        click.echo(f"  {p.file}:{p.line}: {p.reason}")
