"""Plots of the benchmark: CMC curves and metric bars (PNG, written atomically)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from lrfacebench.io import atomic_path


def cmc_plot(curves: Mapping[str, np.ndarray], path: str | Path, title: str = "CMC") -> None:
    """Plot CMC curves (``rank k -> identification rate in [0,1]``, index 0 = rank 1)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for label, curve in curves.items():
        k = min(len(curve), 20)
        ax.plot(np.arange(1, k + 1), np.asarray(curve)[:k] * 100, marker=".", label=label)
    ax.set(xlabel="rank", ylabel="identification rate (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def bar_plot(values: Mapping[str, float], path: str | Path, ylabel: str, title: str) -> None:
    """One bar per label (e.g. FID per method on one dataset); NaN values are left out."""
    items = [(k, v) for k, v in values.items() if not math.isnan(v)]
    fig = Figure(figsize=(max(4, 0.8 * len(items)), 3.5))
    ax = fig.subplots()
    ax.bar([k for k, _ in items], [v for _, v in items], color="#4a78b0")
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    _save(fig, path)


def _save(fig: Figure, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
