"""``lrfb benchmark`` and ``lrfb leaderboard``."""
from __future__ import annotations

from pathlib import Path

import click

from lrfacebench.cli.errors import Command, Group


def _table_name(value: str) -> str:
    if value in ("complexity", "degraded"):
        return "table_degraded" if value == "degraded" else value
    return value if value.startswith("table") else f"table{value}"


def _pairs(items: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"expected NAME=DIR, got {item!r}", param_hint=option)
        pairs[name] = folder
    return pairs


def _seeds(value: str | None) -> list[int]:
    try:
        return [int(s) for s in value.split(",") if s.strip()] if value else []
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint="--seeds") from None


@click.command("benchmark", cls=Command)
@click.option("--all", "all_tables", is_flag=True, help="Every table (default when no --table is given).")
@click.option("--table", "tables", multiple=True, metavar="N",
              help="Only these tables: 1..7, degraded (table_degraded) or complexity (repeatable).")
@click.option("--train", "train_", is_flag=True,
              help="Train every model with --preset instead of evaluating the zoo's weights "
                   "(`lrfb zoo list`), as --seeds does.")
@click.option("--preset", type=click.Choice(["demo", "cpu", "paper"]), default="demo", show_default=True,
              help="Training preset: demo = smoke training (seconds per method; without --train only for "
                   "models the zoo lacks); with --train also cpu (tens of minutes per method) or paper "
                   "(the paper's schedules, GPU).")
@click.option("--data", "data", multiple=True, metavar="NAME=DIR",
              help="A dataset built by `lrfb build-dataset`. celeba -> training HR (train split) and FID "
                   "reference (test split); widerface -> training genuine LR; helen -> Table 3; any other "
                   "name (lr-pipa, lr-dukemtmc, ...) -> a genuine-LR test set (rank-1 too if it has identities).")
@click.option("--reference", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="HR faces FID/KID are measured against: a plain folder of face crops (every image) or a "
                   "built dataset (every hr64 face). Default: celeba's test split, else the sample's.")
@click.option("--genuine", "genuine", multiple=True, metavar="NAME=DIR",
              help="A genuine-LR test set from a plain folder of face crops of any size (resized to 16x16 by "
                   "the project's rule) or a built dataset (test split). Repeatable.")
@click.option("--paired", "paired", multiple=True, metavar="NAME=DIR",
              help="A paired test set with its own LR (table_degraded): a folder built by `lrfb build-dataset "
                   "degraded`, or a folder with hr/ and lr/ images of the same names. Repeatable.")
@click.option("--methods", "methods", multiple=True, metavar="NAME", help="Only these methods (repeatable).")
@click.option("--runs", type=click.Path(path_type=Path), default=None,
              help="Folder of training runs to reuse/write (default OUT/runs).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("lrfb-results"), show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", default=None, metavar="S,S,...",
              help="Train and evaluate at each seed (OUT/seed-S) and merge: mean ± std across seeds.")
@click.option("--bootstrap", type=click.IntRange(100), default=1000, show_default=True,
              help="Paired bootstrap resamples over test faces (std of FID/KID, intervals of every delta).")
@click.option("--fid-mode", type=click.Choice(["clean", "legacy_tensorflow"]), default="clean", show_default=True)
@click.option("--inception", type=click.Path(path_type=Path), default=None,
              help="FID Inception weights file (default: found offline and hash-checked; see lrfb doctor).")
@click.option("--trials", type=int, default=10, show_default=True, help="Rank-1 gallery/probe trials.")
def benchmark_command(all_tables: bool, tables: tuple[str, ...], train_: bool, preset: str, data: tuple[str, ...],
                      reference: Path | None, genuine: tuple[str, ...], paired: tuple[str, ...],
                      methods: tuple[str, ...], runs: Path | None, out: Path, device: str, seed: int,
                      seeds: str | None, bootstrap: int, fid_mode: str, inception: Path | None,
                      trials: int) -> None:
    """Run every method on every test set and write the paper's Tables 1-7 and complexity table.

    Evaluates the model zoo's trained weights and trains nothing, except a model the zoo lacks
    (trained with the smoke preset, and its rows say so); --train trains every model with --preset
    instead (finished runs in --runs are reused). Every row names its weights: zoo name and sha256,
    or run id. SR outputs, features and every evaluation are cached under --out, so a killed
    benchmark resumes without redoing finished work.

    \b
    Every row of a table with a reference method (bicubic; the ablation partner) carries its
    difference to it with a 95 % paired bootstrap interval over the test faces.

    \b
    Writes to OUT: table1.csv ... table7.csv, table_degraded.csv, complexity.csv, leaderboard.csv
    (long format, our rows and the paper's reported values labelled source=paper), LEADERBOARD.md,
    figures/, env.json.

    \b
    Examples:
      lrfb benchmark --all                                  # zoo weights on the embedded sample
      lrfb benchmark --all --train                          # retrain everything (smoke preset)
      lrfb benchmark --table 1 --table 3 --methods cr --methods bicubic
      lrfb benchmark --table 1 --table degraded --methods bicubic --methods nearest \\
          --methods bicubic_noise --genuine tiny=crops/ --paired deg=lrfb-data/degraded --reference hr/
      lrfb benchmark --all --train --preset paper --device cuda --data celeba=data/celeba \\
          --data widerface=data/wider --data lr-pipa=data/lr-pipa --data helen=data/helen
    """
    from lrfacebench.bench.config import TABLE_ORDER, BenchConfig, load_tables, table_titles
    from lrfacebench.bench.harness import Benchmark, run_seeds
    from lrfacebench.bench.leaderboard import aggregate, render_markdown

    selected = tuple(_table_name(t) for t in tables) if tables and not all_tables else TABLE_ORDER
    cfg = BenchConfig(preset=preset, train=train_, tables=selected, methods=methods, data=_pairs(data, "--data"),
                      reference=str(reference) if reference else "", genuine=_pairs(genuine, "--genuine"),
                      paired=_pairs(paired, "--paired"), runs=str(runs) if runs else "", out=str(out),
                      device=device, seed=seed, fid_mode=fid_mode, inception=str(inception) if inception else "",
                      trials=trials, bootstrap=bootstrap)
    rows = run_seeds(cfg, _seeds(seeds)) if _seeds(seeds) else aggregate(Benchmark(cfg).run())
    click.echo(render_markdown([r for r in rows if r.source == "reproduced"], table_titles(load_tables())))
    click.echo(f"wrote {out}/leaderboard.csv, {out}/LEADERBOARD.md and the table CSVs")


@click.group("leaderboard", cls=Group)
def leaderboard_group() -> None:
    """Combine and render leaderboards written by `lrfb benchmark`."""


@leaderboard_group.command("merge")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
def merge_command(results: tuple[Path, ...], out: Path) -> None:
    """Merge RESULTS (leaderboard.csv files or benchmark output folders) from several runs, seeds or
    machines into one leaderboard: repeated results become mean ± std (n_runs), the paper's
    reported rows are kept once.

    Example: lrfb leaderboard merge results-s0 results-s1 results-s2 --out published
    """
    from lrfacebench import io
    from lrfacebench.bench.leaderboard import aggregate, read_rows, render_markdown, write_rows

    rows = []
    for path in results:
        rows += read_rows(path / "leaderboard.csv" if path.is_dir() else path)
    merged = aggregate(rows)
    write_rows(out / "leaderboard.csv", merged)
    io.write_text(out / "LEADERBOARD.md", "# lrfacebench leaderboard (merged)\n\nMerged from: "
                  + ", ".join(f"`{p}`" for p in results) + "\n\n" + render_markdown(merged))
    click.echo(f"merged {len(rows)} rows into {len(merged)}: {out}/leaderboard.csv, {out}/LEADERBOARD.md")
