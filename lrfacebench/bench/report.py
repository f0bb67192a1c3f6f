"""What a benchmark writes for readers: ``leaderboard.csv`` and ``LEADERBOARD.md`` (our rows beside
the paper's reported values), the figures (paper Fig. 4/5, FID bars, CMC curves) and ``env.json``."""
from __future__ import annotations

import csv
import datetime as dt
import importlib.resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from lrfacebench import io
from lrfacebench.bench import figures
from lrfacebench.bench.config import BenchConfig, table_titles
from lrfacebench.bench.evaluators import Evaluation
from lrfacebench.bench.leaderboard import Row, aggregate, render_markdown, write_rows
from lrfacebench.bench.provenance import RunKey
from lrfacebench.grids import grid_array
from lrfacebench.pixels import to_unit_float


def load_reported(tables: Iterable[str]) -> list[Row]:
    """The paper's reported values (``source=paper``) for the selected tables."""
    text = importlib.resources.files("lrfacebench.bench").joinpath("reported.csv").read_text()
    keep = set(tables)
    return [Row(table=d["table"], dataset=d["dataset"], split="test", method=d["method"],
                variant=d["variant"] or "default", metric=d["metric"], value=float(d["value"]),
                higher_is_better=d["metric"] in ("rank1", "psnr_y", "ssim_y"), protocol=d["protocol"],
                source="paper", n_runs=0)
            for d in csv.DictReader(text.splitlines()) if d["table"] in keep]


def write_leaderboard(out: Path, rows: list[Row], specs: dict[str, dict[str, Any]], cfg: BenchConfig,
                      env: dict[str, Any], device: str) -> None:
    """``leaderboard.csv`` (every row) and ``LEADERBOARD.md`` (one wide table per table and metric)."""
    write_rows(out / "leaderboard.csv", rows)
    weights = (f"every model trained with the `{cfg.training_preset}` preset" if cfg.train else
               f"the model zoo's weights (`lrfb zoo list`; models it lacks trained with the "
               f"`{cfg.training_preset}` preset, as the Weights table says)")
    header = (f"# lrfacebench leaderboard\n\nPreset `{cfg.preset}`: {weights}; device "
              f"`{env.get('gpu') or device}`, lrfacebench {env['lrfacebench']}, {dt.date.today().isoformat()}. "
              "Rows marked *reported in paper* are the values printed in Cheng et al. (WACV 2020) "
              "on their datasets, shown for reference only; every other value was measured by this "
              "run. Each dataset column states its N below the table.\n\n")
    io.write_text(out / "LEADERBOARD.md", header + render_markdown(aggregate(rows), table_titles(specs))
                  + weights_table(rows))


def weights_table(rows: Iterable[Row]) -> str:
    """Markdown: which weights each method's rows used (zoo name or run id, and sha256)."""
    used = sorted({(r.method, r.variant, r.run_id, r.checkpoint_sha256) for r in rows
                   if r.source == "reproduced" and r.run_id})
    lines = ["", "## Weights", "", "| method | variant | weights | sha256 |", "|---|---|---|---|"]
    lines += [f"| {m} | {v} | {run} | {('`' + sha[:16] + '…`') if sha else '—'} |" for m, v, run, sha in used]
    return "\n".join(lines) + "\n"


def write_seed_leaderboard(out: Path, merged: list[Row], titles: dict[str, str], seeds: Sequence[int]) -> None:
    """The leaderboard of several training seeds, each seed's rows averaged (mean ± std)."""
    write_rows(out / "leaderboard.csv", merged)
    io.write_text(out / "LEADERBOARD.md", f"# lrfacebench leaderboard (seeds {', '.join(map(str, seeds))})\n\n"
                  "Mean ± std across training seeds; Δ and its interval: the mean over seeds of each "
                  "seed's paired bootstrap over test faces.\n\n" + render_markdown(merged, titles))


def write_figures(ev: Evaluation, specs: dict[str, dict[str, Any]], rows: list[Row]) -> None:
    """Per genuine-LR test set: Fig. 4 (LR and each Table 1 method's SR), Fig. 5 (genuine,
    regulated and resolved faces of each regulating method), FID bars; CMC curves per recogniser."""
    fig_dir = ev.out / "figures"
    n = ev.cfg.figure_faces
    keys = [RunKey.parse(m) for m in specs.get("table1", {}).get("methods", [])
            if not ev.cfg.methods or m.split(":")[0] in ev.cfg.methods]
    for test in ev.data.of_role("genuine"):
        lr = to_unit_float(test.faces.images[:n])
        if keys:
            cols = [("LR", lr)] + [(k.label, ev.cache.outputs(k, test)[0][:n]) for k in keys]
            io.write_png(fig_dir / f"fig4_{test.name}.png", grid_array(cols))
        regulating = [k for k in keys if ev.runs.method(k).regulate(lr[:1].to(ev.device)) is not None]
        for k in regulating:
            cols = [("genuine", lr), ("regulated", ev.cache.outputs(k, test, "regulated")[0][:n]),
                    ("resolved", ev.cache.outputs(k, test)[0][:n])]
            io.write_png(fig_dir / f"fig5_{test.name}_{k.label.replace(':', '-')}.png", grid_array(cols))
        fids = {r.method if r.variant == "default" else f"{r.method}:{r.variant}": r.value for r in rows
                if r.table == "table1" and r.dataset == test.name and r.metric == "fid"
                and r.source == "reproduced"}
        if fids:
            figures.bar_plot(fids, fig_dir / f"fid_{test.name}.png", "FID (lower is better)",
                             f"Table 1 — {test.name}")
    cmc_dir = ev.out / "cmc"
    for path in sorted(cmc_dir.glob("*.json")) if cmc_dir.is_dir() else []:
        test_name, rec, _ = path.stem.split("__")
        curves = {p.stem.split("__")[2]: io.read_json(p)["cmc"] for p in cmc_dir.glob(f"{test_name}__{rec}__*.json")}
        figures.cmc_plot(curves, fig_dir / f"cmc_{test_name}_{rec}.png", f"CMC — {test_name} ({rec})")
