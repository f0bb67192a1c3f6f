"""Figures of the benchmark: qualitative grids (paper Fig. 4/5), CMC curves and metric bars."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from lrfacebench.io import atomic_path, write_png

CELL = 64
HEADER = 14
GAP = 2


def grid_array(columns: Sequence[tuple[str, torch.Tensor]], cell: int = CELL) -> np.ndarray:
    """RGB uint8 ``(H,W,3)`` grid: one titled column per ``(title, images)``, one row per face,
    white 2 px gaps. ``images``: ``(N,3,h,w)`` float in [0,1], nearest-neighbour scaled to
    ``cell`` (so 16x16 inputs show their real pixels). All columns must have the same N."""
    import torch.nn.functional as F

    from lrfacebench.degrade import to_uint8

    n = {len(t) for _, t in columns}
    if len(n) != 1:
        raise ValueError(f"columns have different lengths: {sorted(n)}")
    tiles = torch.stack([F.interpolate(t.detach().float().cpu(), size=(cell, cell), mode="nearest")
                         .clamp(0, 1) for _, t in columns], 1)  # (N, columns, 3, cell, cell)
    tiles = F.pad(tiles, (GAP, 0, GAP, 0), value=1.0)
    rows, k = tiles.shape[:2]
    step = cell + GAP
    grid = tiles.permute(2, 0, 3, 1, 4).reshape(3, rows * step, k * step)
    grid = to_uint8(F.pad(grid, (0, GAP, 0, GAP), value=1.0)).permute(1, 2, 0).numpy()
    header = Image.new("RGB", (grid.shape[1], HEADER), "white")
    draw = ImageDraw.Draw(header)
    for i, (title, _) in enumerate(columns):
        draw.text((GAP + i * step, 1), title[: cell // 6], fill="black")
    return np.concatenate([np.asarray(header), grid], 0)


def image_grid(columns: Sequence[tuple[str, torch.Tensor]], path: str | Path, cell: int = CELL) -> None:
    """Write :func:`grid_array` of ``columns`` as a PNG."""
    write_png(path, grid_array(columns, cell))


def cmc_plot(curves: Mapping[str, np.ndarray], path: str | Path, title: str = "CMC") -> None:
    """Plot CMC curves (``rank k -> identification rate in [0,1]``, index 0 = rank 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, curve in curves.items():
        k = min(len(curve), 20)
        ax.plot(np.arange(1, k + 1), np.asarray(curve)[:k] * 100, marker=".", label=label)
    ax.set(xlabel="rank", ylabel="identification rate (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def bar_plot(values: Mapping[str, float], path: str | Path, ylabel: str, title: str) -> None:
    """One bar per label (e.g. FID per method on one dataset); NaN values are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, v) for k, v in values.items() if not math.isnan(v)]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(items)), 3.5))
    ax.bar([k for k, _ in items], [v for _, v in items], color="#4a78b0")
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    _save(fig, path)


def _save(fig, path: str | Path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
