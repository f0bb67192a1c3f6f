"""The long (tidy) leaderboard: one row per (table, dataset, method, variant, metric) result.

Reproduced rows and the paper's reported values share one schema; ``source`` tells them
apart and the Markdown rendering labels reported values explicitly. Wide tables, aggregates
across runs/machines (mean ± std over seeds) and best-value marking all derive from it.

A row may carry its difference to the table's reference method on the same test faces
(``delta = value - value(delta_vs)``) with a paired bootstrap interval
(``delta_ci_low``/``delta_ci_high``, see :mod:`lrfacebench.metrics.bootstrap`); the Markdown
marks the differences whose interval excludes 0.
"""
from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from lrfacebench.io import atomic_path


@dataclass
class Row:
    """One result. ``value``/``std`` are floats (``nan`` when not applicable)."""

    table: str
    dataset: str
    split: str
    method: str
    variant: str
    metric: str
    value: float
    std: float = math.nan
    n_runs: int = 1
    n_images: int = 0
    higher_is_better: bool = False
    protocol: str = ""
    source: str = "reproduced"  # reproduced | paper
    run_id: str = ""
    checkpoint_sha256: str = ""
    config_sha256: str = ""
    lrfb_version: str = ""
    git_sha: str = ""
    torch_version: str = ""
    device: str = ""
    date: str = ""
    delta: float = math.nan
    delta_ci_low: float = math.nan
    delta_ci_high: float = math.nan
    delta_vs: str = ""

    @property
    def significant(self) -> bool:
        """The difference to ``delta_vs`` has an interval that excludes 0."""
        return self.delta_ci_low > 0 or self.delta_ci_high < 0

    def key(self) -> tuple[str, ...]:
        return (self.table, self.dataset, self.split, self.method, self.variant, self.metric,
                self.protocol, self.source)


COLUMNS = [f.name for f in fields(Row)]
_FLOATS = {"value", "std", "delta", "delta_ci_low", "delta_ci_high"}
OPTIONAL = ("delta", "delta_ci_low", "delta_ci_high", "delta_vs")  # absent from older leaderboards
SMALL_N = 500  # below this many test faces FID is strongly biased (docs/protocol.md)
_INTS = {"n_runs", "n_images"}


def write_rows(path: str | Path, rows: Iterable[Row]) -> None:
    """Write rows as CSV atomically, sorted by table, dataset, source (ours first), method, variant,
    metric; floats with 10 significant digits."""
    df = pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
    df = df.assign(paper_last=df["source"] != "reproduced").sort_values(
        ["table", "dataset", "paper_last", "method", "variant", "metric"], kind="stable").drop(columns="paper_last")
    for c in _FLOATS:
        df[c] = df[c].map(_fmt)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\r\n")


def read_rows(path: str | Path) -> list[Row]:
    """Read a leaderboard CSV written by :func:`write_rows`; ``ValueError`` names a bad column."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(COLUMNS) - set(OPTIONAL) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a leaderboard CSV, missing columns {sorted(missing)}")
    out = []
    for d in df.to_dict("records"):
        kw = {c: d[c] for c in COLUMNS if c in d}
        for c in _FLOATS & set(kw):
            kw[c] = float(kw[c]) if kw[c] not in ("", "nan") else math.nan
        for c in _INTS:
            kw[c] = int(kw[c] or 0)
        kw["higher_is_better"] = kw["higher_is_better"] in ("True", "true", "1")
        out.append(Row(**kw))
    return out


def aggregate(rows: Sequence[Row]) -> list[Row]:
    """Combine repeated results (same key: several seeds/machines) into mean ± std rows.

    Rows that already carry a std from within-run trials (e.g. rank-1 over 10 trials) and
    appear once keep it. Reported (paper) rows are deduplicated, never averaged with ours.
    Differences to the reference method are averaged over the runs, and so are their interval
    bounds (each run's interval is over the same test faces, so it keeps its width).
    """
    groups: dict[tuple[str, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.key()].append(r)
    out = []
    for group in groups.values():
        first = group[0]
        if len(group) == 1 or first.source == "paper":
            out.append(first)
            continue
        values = [r.value for r in group]
        deltas = {c: statistics.fmean(getattr(r, c) for r in group)
                  for c in ("delta", "delta_ci_low", "delta_ci_high")}
        merged = Row(**{**asdict(first), **deltas, "value": statistics.fmean(values),
                        "std": statistics.stdev(values), "n_runs": sum(r.n_runs for r in group),
                        "run_id": ";".join(sorted({r.run_id for r in group})),
                        "checkpoint_sha256": ";".join(sorted({r.checkpoint_sha256 for r in group})),
                        "device": ";".join(sorted({r.device for r in group}))})
        out.append(merged)
    return out


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.10g}"


def _num(x: float, digits: int, sign: bool = False) -> str:
    return "inf" if math.isinf(x) else f"{x:{'+' if sign else ''}.{digits}f}"


def _cell(r: Row) -> str:
    digits = 4 if abs(r.value) < 1 else 2
    text = _num(r.value, digits)
    if not math.isnan(r.std):
        text += f" ± {_num(r.std, digits)}"
    if not math.isnan(r.delta):
        width = abs(r.delta_ci_high - r.delta_ci_low)  # two significant digits of the interval
        d = min(6, max(2, 1 - math.floor(math.log10(width)))) if width > 0 else 4
        text += (f" (Δ {_num(r.delta, d, True)}{'*' if r.significant else ''} "
                 f"[{_num(r.delta_ci_low, d, True)}, {_num(r.delta_ci_high, d, True)}])")
    return text


_REFERENCE = re.compile(r"reference=([^;()]+)\(N=(\d+)\)")


def _n_sentence(trs: Sequence[Row]) -> str:
    """Faces per dataset, the reference set of FID/KID and a small-N warning where it applies."""
    parts = []
    for d in sorted({r.dataset for r in trs if r.source == "reproduced" and r.n_images}):
        r = next(r for r in trs if r.dataset == d and r.source == "reproduced" and r.n_images)
        text = f"{d}: N={r.n_images}"
        if (ref := _REFERENCE.search(r.protocol)) is not None:
            text += f" against {ref.group(1)} (N={ref.group(2)})"
            if r.n_images < SMALL_N or int(ref.group(2)) < SMALL_N:
                text += f" — small N (< {SMALL_N}): FID is biased here, compare KID and the Δ intervals"
        parts.append(text)
    return ", ".join(parts)


def _delta_sentence(trs: Sequence[Row]) -> str:
    with_delta = [r for r in trs if r.source == "reproduced" and not math.isnan(r.delta)]
    if not with_delta:
        return ""
    refs = ", ".join(f"`{v}`" for v in sorted({r.delta_vs for r in with_delta}))
    text = (f"Δ: difference to {refs} on the same faces, [95 % paired bootstrap interval over test "
            "faces]; * marks an interval that excludes 0.")
    if not any(r.significant for r in with_delta):
        text += " **No difference in this table is significant: every interval includes 0.**"
    return text


def render_markdown(rows: Sequence[Row], titles: dict[str, str] | None = None) -> str:
    """Wide pipe tables, one per (table, metric): rows = method/variant, columns = datasets.

    Our best value per column is bold (by the metric's direction); the paper's reported values
    appear in separate rows labelled "(reported in paper)" and are never bolded.
    """
    titles = titles or {}
    out: list[str] = []
    by_table: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_table[(r.table, r.metric)].append(r)
    for (table, metric), trs in sorted(by_table.items()):
        datasets = sorted({r.dataset for r in trs})
        direction = "higher is better" if trs[0].higher_is_better else "lower is better"
        protocols = sorted({r.protocol for r in trs if r.source == "reproduced" and r.protocol})
        out.append(f"### {titles.get(table, table)} — `{metric}` ({direction})\n")
        if protocols:
            out.append("Protocol: " + "; ".join(f"`{p}`" for p in protocols) + "\n")
        best: dict[str, float] = {}
        for d in datasets:
            vals = [r.value for r in trs if r.dataset == d and r.source == "reproduced"
                    and not math.isnan(r.value)]
            if vals:
                best[d] = max(vals) if trs[0].higher_is_better else min(vals)
        labels: dict[tuple[str, str, str], dict[str, Row]] = defaultdict(dict)
        for r in trs:
            labels[(r.source, r.method, r.variant)][r.dataset] = r
        out.append("| method | " + " | ".join(datasets) + " |")
        out.append("|---|" + "---|" * len(datasets))
        for (source, method, variant), cells in sorted(labels.items(),
                                                      key=lambda kv: (kv[0][0] != "reproduced", kv[0][1:])):
            name = method if variant in ("", "default") else f"{method} ({variant})"
            if source == "paper":
                name += " *(reported in paper)*"
            row = []
            for d in datasets:
                r = cells.get(d)
                if r is None:
                    row.append("—")
                    continue
                text = _cell(r)
                if source == "reproduced" and d in best and r.value == best[d]:
                    text = f"**{text}**"
                row.append(text)
            out.append(f"| {name} | " + " | ".join(row) + " |")
        for sentence in (_n_sentence(trs), _delta_sentence(trs)):
            if sentence:
                out.append("\n" + sentence)
        out.append("")
    return "\n".join(out)
