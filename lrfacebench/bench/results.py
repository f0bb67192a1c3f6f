"""Evaluated rows with their bootstrap replicates, the differences to a table's reference method,
and the cache that runs each evaluation job once (``OUT/jobs/<hash>.json``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from lrfacebench import io
from lrfacebench.bench.leaderboard import Row
from lrfacebench.metrics import bootstrap


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


def mean_replicates(values: Iterable[float], w: np.ndarray) -> list[float] | None:
    """Bootstrap replicates of the mean of per-face ``values`` under weights ``w`` ``(R,N)``
    (``None`` if any value is not finite, e.g. the infinite PSNR of an output identical to its HR face)."""
    v = np.asarray(list(values), dtype=np.float64)
    return bootstrap.mean_replicates(v, w).tolist() if np.isfinite(v).all() else None


class JobCache:
    """Runs ``compute`` once per distinct job description; its results are kept as JSON in ``folder``.

    ``salt`` is part of every description (the bootstrap resamples and seed, which every
    replicate depends on)."""

    def __init__(self, folder: Path, salt: Mapping[str, Any]) -> None:
        self.folder, self.salt = folder, dict(salt)

    def __call__(self, parts: Mapping[str, Any], compute: Callable[[], list[Result]]) -> list[Result]:
        parts = {**parts, **self.salt}
        path = self.folder / f"{io.sha256_json(parts)[:24]}.json"
        if path.is_file():
            return [Result(Row(**d["row"]), d["label"], d["replicates"]) for d in io.read_json(path)["results"]]
        results = compute()
        io.write_json(path, {"job": parts, "results": [
            {"row": dataclasses.asdict(r.row), "label": r.label, "replicates": r.replicates} for r in results]})
        return results
