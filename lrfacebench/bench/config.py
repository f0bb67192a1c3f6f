"""What one ``lrfb benchmark`` invocation runs (:class:`BenchConfig`), and the table specs shipped
with the package (``tables.toml``: the paper's tables as data, evaluated by kind)."""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from typing import Any

from lrfacebench.config import parse_toml
from lrfacebench.metrics import bootstrap

BENCH_PRESETS = {"demo": "smoke", "cpu": "cpu", "paper": "paper"}  # benchmark preset -> training preset
# Inference timing per benchmark preset (the paper protocol: 20 warm-up runs, median of 1,000).
TIMING = {"demo": dict(warmup=5, n_timed=30, large_batch=64, large_repeats=2),
          "cpu": dict(warmup=10, n_timed=100, large_batch=256, large_repeats=3),
          "paper": dict(warmup=20, n_timed=1000, large_batch=256, large_repeats=5)}
TABLE_ORDER = ("table1", "table2", "table3", "table4", "table5", "table6", "table7", "table_degraded",
               "complexity")


@dataclass
class BenchConfig:
    """What one ``lrfb benchmark`` invocation runs (snapshotted to ``OUT/config.json``)."""

    preset: str = "demo"
    # False: every model comes from the zoo (lrfacebench.zoo), and only what it lacks is trained
    # (with the preset); True: every model is trained with the preset (runs in ``runs``)
    train: bool = False
    tables: tuple[str, ...] = TABLE_ORDER
    methods: tuple[str, ...] = ()  # restrict to these method names (empty = every method of a table)
    data: dict[str, str] = field(default_factory=dict)  # NAME -> built dataset folder
    reference: str = ""  # folder of HR faces for FID/KID (default: from data, else the sample's)
    genuine: dict[str, str] = field(default_factory=dict)  # NAME -> folder of genuine-LR crops
    paired: dict[str, str] = field(default_factory=dict)  # NAME -> paired set (built or hr/ + lr/)
    runs: str = ""  # training runs folder (default OUT/runs); finished runs there are reused
    data_dir: str = ""  # built sample sets and image folders for FID (default OUT/data)
    out: str = "lrfb-results"
    device: str = "auto"
    seed: int = 0
    fid_mode: str = "clean"
    inception: str = ""  # path of the FID Inception weights (default: found offline, hash-checked)
    trials: int = 10  # rank-1 gallery/probe trials
    batch_size: int = 256
    figure_faces: int = 8
    bootstrap: int = bootstrap.RESAMPLES  # paired bootstrap resamples over test faces

    @property
    def training_preset(self) -> str:
        return BENCH_PRESETS[self.preset]


def _specs() -> dict[str, Any]:
    return parse_toml(importlib.resources.files("lrfacebench.bench").joinpath("tables.toml").read_text())


def load_tables() -> dict[str, dict[str, Any]]:
    """The table specs shipped in ``lrfacebench/bench/tables.toml``."""
    return _specs()["tables"]


def load_recognizers() -> dict[str, dict[str, Any]]:
    """The recognisers the tables name (``[recognizers.NAME]`` of ``tables.toml``)."""
    return _specs()["recognizers"]


def table_titles(specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Table name -> its title (the name when the spec has none)."""
    return {t: s.get("title", t) for t, s in specs.items()}
