"""``lrfb build-dataset`` and ``lrfb card``."""
from __future__ import annotations

import time
from pathlib import Path

import click

from lrfacebench.cli.errors import Command
from lrfacebench.data.sources import SOURCES


def _parse_shard(spec: str | None) -> tuple[int, int]:
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


@click.command("build-dataset", cls=Command)
@click.argument("source", type=click.Choice(tuple(SOURCES)))
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder in the source's official layout (a video file or folder for `video`). "
                   "Not needed for `sample`.")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder; rerun the same command to resume an interrupted build.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Worker processes on this machine (one detector each); with --distributor ray, the "
                   "CPUs of the local Ray.")
# the names of lrfacebench.data.distribute.DISTRIBUTORS, spelt out so --help need not import torch
@click.option("--distributor", type=click.Choice(("multiprocessing", "ray")), default="multiprocessing",
              show_default=True, help="How the shards run: processes on this machine, or one Ray task each "
                                      '(pip install -e ".[ray]").')
@click.option("--ray-address", default=None, envvar="RAY_ADDRESS", show_envvar=True, metavar="HOST:PORT",
              help="With --distributor ray: the Ray cluster to run on (auto: the one started on this machine); "
                   "--out and --root must be paths every node sees. Default: a local Ray of --workers CPUs.")
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
def build_dataset_command(source: str, root: Path | None, out: Path, workers: int, distributor: str,
                          ray_address: str | None, shard_spec: str | None, limit: int | None, device: str | None,
                          seed: int | None, config_file: Path | None, overrides: tuple[str, ...],
                          exclude: tuple[Path, ...], overwrite: bool, dry_run: bool) -> None:
    """Detect tiny faces in photos or video (or crop paired HR/LR sets) into a carded dataset.

    \b
    SOURCE: pipa, dukemtmc, widerface (genuine-LR faces of average size <= 16 px found by a
    tiny-face detector), tinyface, survface (the pre-cropped identity-labelled LR faces of TinyFace
    and QMUL-SurvFace with their official splits; SurvFace's verification pairs in pairs.csv),
    celeba, helen (64x64 HR + 16x16 LR = DS(HR) pairs), folder (any
    images), video (any videos and animated GIFs; faces linked into tracks), sample (the
    embedded sample; no --root needed), degraded (HR faces of any folder, a built paired set
    or the sample + a seeded real-world degradation chain as LR, parameters per face in the
    manifest), degraded_scenes (photos shrunk until their faces are 8-16 px and JPEG-stored,
    faces detected there, HR cut from the original).
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
      lrfb build-dataset pipa --root /data/PIPA --out lrfb-data/lr-pipa --distributor ray --workers 8
      lrfb build-dataset video --root clip.mp4 --out lrfb-data/clip -o source.stride=10
      lrfb build-dataset video --root hd.mp4 --out lrfb-data/hd-lr -o source.scale=0.25
      lrfb build-dataset degraded --root lrfb-data/helen --out lrfb-data/helen-degraded --seed 1
      lrfb build-dataset pipa --root /data/PIPA --out lrfb-data/lr-pipa --exclude review-decisions.csv
    """
    from lrfacebench.data.build import build, describe_build_plan, summary
    from lrfacebench.data.recipe import resolve_config
    from lrfacebench.data.sources.sample import default_root

    t0 = time.perf_counter()
    if root is None:
        if source != "sample":
            raise click.UsageError(f"--root is required for {source}")
        root = default_root()
    if not root.exists():
        raise click.BadParameter(f"{root} does not exist", param_hint="--root")
    shard = _parse_shard(shard_spec)
    cfg = resolve_config(source, config_file, overrides, limit, device, seed)
    if dry_run:
        click.echo(describe_build_plan(cfg, root))
        return
    try:
        result = build(cfg, root, out, workers, shard, exclude, overwrite, distributor, ray_address)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: run the same command again to continue (finished shards "
                                   "are kept)") from None
    if result is None:
        click.echo(f"shard job {shard_spec} finished its shards; the merge runs when the last job finishes "
                   f"(or run the command again without --shard). Output: {out}")
        return
    for line in summary(result, out, time.perf_counter() - t0):
        click.echo(line)


@click.command("card", cls=Command)
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--text", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Curated Markdown to use instead of the packaged data_cards/<name>.md.")
def card_command(dataset: Path, text: Path | None) -> None:
    """Regenerate DATASET_CARD.md and size_histogram.png of a built dataset from its stats.json.

    \b
    Example:
      lrfb card lrfb-data/sample --text my-card.md
    """
    from lrfacebench.data.cards import write_card

    path = write_card(dataset, text.read_text(encoding="utf-8") if text else None)
    click.echo(f"wrote {path}")
