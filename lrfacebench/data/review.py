"""Contact sheets of kept and rejected faces for human review (the reviewer's decisions go
into an exclusion list that a rerun of ``lrfb build-dataset`` applies)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lrfacebench.io import atomic_path

_LABEL_H = 12


def contact_sheet(crops: Sequence[np.ndarray], labels: Sequence[str], path: Path, cell: int = 48,
                  cols: int = 16) -> None:
    """Write a grid of ``crops`` (RGB uint8 (h,w,3), any size) with ``labels`` under each cell.

    Every crop is enlarged or reduced to ``cell`` x ``cell`` pixels by nearest neighbour, so the
    native pixels stay visible. The format follows ``path``'s suffix (``.jpg``/``.jpeg`` -> JPEG
    quality 90, otherwise PNG); the file is written atomically. An empty list gives a one-cell
    sheet that says so.
    """
    if len(crops) != len(labels):
        raise ValueError(f"{len(crops)} crops but {len(labels)} labels")
    if cell < 8 or cols < 1:
        raise ValueError(f"cell must be >= 8 and cols >= 1, got cell={cell}, cols={cols}")
    n = len(crops)
    ncols = max(1, min(cols, n))
    rows = max(1, -(-n // ncols))
    w_cell, h_cell = cell + 2, cell + _LABEL_H + 2
    sheet = Image.new("RGB", (ncols * w_cell, rows * h_cell), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if n == 0:
        draw.text((2, 2), "none", fill=(0, 0, 0))
    max_chars = max(1, cell // 6)
    for k, (crop, label) in enumerate(zip(crops, labels)):
        x, y = (k % ncols) * w_cell + 1, (k // ncols) * h_cell + 1
        if crop.size:
            sheet.paste(Image.fromarray(np.ascontiguousarray(crop)).resize((cell, cell), Image.NEAREST), (x, y))
        text = str(label)
        draw.text((x, y + cell), text if len(text) <= max_chars else text[:max_chars - 1] + "~", fill=(0, 0, 0))
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        sheet.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
