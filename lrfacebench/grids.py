"""Titled image grids: one column per kind of image (LR, SR, HR, ...), one row per face.

Used by the training sample grids (the paper's Fig. 5), ``lrfb diagnose`` and the benchmark's
qualitative figures (Fig. 4/5). Output: RGB ``uint8`` ``(H,W,3)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from lrfacebench.degrade import to_uint8

CELL = 64
HEADER = 14
GAP = 2


def grid_array(columns: Sequence[tuple[str, torch.Tensor]], cell: int = CELL) -> np.ndarray:
    """RGB uint8 ``(H,W,3)`` grid: one titled column per ``(title, images)``, one row per face,
    white 2 px gaps. ``images``: ``(N,3,h,w)`` float in [0,1], nearest-neighbour scaled to
    ``cell`` (so 16x16 inputs show their real pixels). All columns must have the same N."""
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
