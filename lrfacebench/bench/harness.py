"""``lrfb benchmark``: table specs (``tables.toml``, data) -> zoo weights or training runs -> cached
SR outputs -> metric rows -> ``tableN.csv``, ``leaderboard.csv``, ``LEADERBOARD.md``, figures.

The parts, each its own module: :mod:`.config` (what is run), :mod:`.data` (the test sets),
:mod:`.provenance` (trained runs and what produced a row), :mod:`.cache` (SR outputs as PNG
folders), :mod:`.evaluators` (one function per evaluation kind), :mod:`.results` (bootstrap
deltas, the job cache) and :mod:`.report` (leaderboards and figures). A table with
``compare_to`` gets, on every row, the difference to that method on the same faces with a paired
bootstrap interval (:mod:`lrfacebench.metrics.bootstrap`). Every unit of work is cached under
``--out``, so a killed benchmark resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from lrfacebench import io, runtime
from lrfacebench.bench.cache import OutputCache
from lrfacebench.bench.config import BENCH_PRESETS, TABLE_ORDER, BenchConfig, load_tables, table_titles
from lrfacebench.bench.data import BenchData, build_degraded_sample, build_sample, resolve, sample_data
from lrfacebench.bench.evaluators import EVALUATORS, Evaluation, selects
from lrfacebench.bench.leaderboard import Row, aggregate, write_rows
from lrfacebench.bench.provenance import RunKey, TrainedRuns
from lrfacebench.bench.report import load_reported, write_figures, write_leaderboard, write_seed_leaderboard
from lrfacebench.bench.results import JobCache, with_deltas

log = logging.getLogger(__name__)


class Benchmark:
    """One benchmark: resolves data, trains what is missing, evaluates every selected table."""

    def __init__(self, cfg: BenchConfig) -> None:
        if cfg.preset not in BENCH_PRESETS:
            raise ValueError(f"unknown preset {cfg.preset!r}; choose from {sorted(BENCH_PRESETS)}")
        if cfg.preset != "demo" and not cfg.train:
            raise ValueError(f"preset {cfg.preset!r} trains every model: add --train (without it the "
                             "zoo's weights are evaluated, and models the zoo lacks get the demo's smoke training)")
        all_tables = load_tables()
        unknown = set(cfg.tables) - set(all_tables)
        if unknown:
            raise ValueError(f"unknown table(s) {sorted(unknown)}; known: {sorted(all_tables)}")
        self.cfg = cfg
        self.specs = {t: all_tables[t] for t in TABLE_ORDER if t in cfg.tables}
        listed = [RunKey.parse(m) for spec in self.specs.values() for m in spec.get("methods", [])]
        unmatched = [m for m in cfg.methods if not any(selects((m,), k) for k in listed)]
        if unmatched:  # a typo would otherwise leave its rows out without a word
            raise ValueError(f"--methods {', '.join(unmatched)}: in none of the selected tables; they list "
                             f"{', '.join(sorted({k.label for k in listed}))}")
        self.out = Path(cfg.out)
        self.data_dir = Path(cfg.data_dir) if cfg.data_dir else self.out / "data"
        self.device = runtime.resolve_device(cfg.device)
        self.env = runtime.environment(self.device)
        self.timings: dict[str, float] = {}
        data = self._resolve_data()
        runs = TrainedRuns(cfg, Path(cfg.runs) if cfg.runs else self.out / "runs", data, self.device, self.env,
                           self.timings)
        self.evaluation = Evaluation(cfg, data, runs, OutputCache(self.out, self.data_dir, runs, cfg.batch_size),
                                     JobCache(self.out / "jobs", {"bootstrap": [cfg.bootstrap, cfg.seed]}), self.out)

    def _resolve_data(self) -> BenchData:
        """The sets of ``cfg``; the sample fills empty roles (its photos are only searched, and its
        degraded set only built, when they are needed)."""
        cfg = self.cfg
        given = cfg.data or cfg.reference or cfg.genuine or cfg.paired
        wants_paired = any(s.get("datasets") == "paired" for s in self.specs.values()) and not cfg.paired
        degraded = build_degraded_sample(self.data_dir / "sample-degraded") if wants_paired else None
        if not given:
            return sample_data(build_sample(self.data_dir / "sample-build", cfg.device), degraded)
        return resolve(cfg.data, cfg.reference or None, cfg.genuine, cfg.paired, sample_data(degraded=degraded))

    def run(self) -> list[Row]:
        """Evaluate every selected table; write every output file; return all rows (ours + paper)."""
        io.write_json(self.out / "config.json", dataclasses.asdict(self.cfg))
        rows: list[Row] = []
        for table, spec in tqdm(self.specs.items(), desc="tables", disable=None):
            t0 = time.perf_counter()
            table_rows = with_deltas(EVALUATORS[spec["kind"]](self.evaluation, table, spec),
                                     spec.get("compare_to", ""))
            self.timings[table] = time.perf_counter() - t0
            write_rows(self.out / f"{table}.csv", table_rows)
            rows += table_rows
            log.info("%s done in %.0f s", table, self.timings[table])
        rows += load_reported(self.specs)
        write_leaderboard(self.out, rows, self.specs, self.cfg, self.env, str(self.device))
        io.write_json(self.out / "env.json", {**self.env, "timings_s": self.timings})
        write_figures(self.evaluation, self.specs, rows)
        return rows


def run_seeds(cfg: BenchConfig, seeds: Iterable[int]) -> list[Row]:
    """The benchmark once per training seed (``OUT/seed-S``; runs, data and FID features shared),
    then every result aggregated into ``OUT``: mean ± std across seeds (``n_runs``) beside each
    seed's bootstrap interval (see :func:`lrfacebench.bench.leaderboard.aggregate`)."""
    if not cfg.train:
        raise ValueError("several seeds train one model each: add --train (the zoo holds one model per method)")
    out, seeds = Path(cfg.out), list(seeds)
    rows: list[Row] = []
    titles: dict[str, str] = {}
    for seed in seeds:
        bench = Benchmark(dataclasses.replace(cfg, seed=seed, out=str(out / f"seed-{seed}"),
                                              runs=cfg.runs or str(out / "runs"),
                                              data_dir=cfg.data_dir or str(out / "data")))
        rows += [r for r in bench.run() if r.source == "reproduced"]
        titles = table_titles(bench.specs)
    merged = aggregate(rows + load_reported(titles))
    write_seed_leaderboard(out, merged, titles, seeds)
    return merged
