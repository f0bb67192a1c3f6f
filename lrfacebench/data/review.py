"""Contact sheets of kept and rejected faces for human review (the reviewer's decisions go
into an exclusion list that a rerun of ``lrfb build-dataset`` applies)."""
from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from lrfacebench.data.manifest import write_csv
from lrfacebench.data.recipe import BuildOptions
from lrfacebench.io import atomic_path, read_rgb

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


def write_review(out: Path, kept: list[dict[str, Any]], rejected: list[dict[str, Any]],
                 b: BuildOptions) -> None:
    """Contact sheets for a human reviewer: ``review/kept_NNN.jpg`` (pages of ``review_faces``)
    and ``review/rejected_<reason>.jpg``; ``review/index.csv`` maps sheet cells to face ids."""
    shutil.rmtree(out / "review", ignore_errors=True)  # sheets of a previous merge
    index: list[tuple[str, int, str, str]] = []
    pages = [kept[i:i + b.review_faces] for i in range(0, len(kept), b.review_faces)][: b.review_sheets]
    for p, rows in enumerate(pages, 1):
        name = f"kept_{p:03d}.jpg"
        contact_sheet([read_rgb(out / r["crop"]) for r in rows], [_short(r["face_id"]) for r in rows],
                      out / "review" / name)
        index += [(name, k, r["face_id"], "") for k, r in enumerate(rows)]
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rejected:
        if r["crop"] and len(by_reason[r["reason"]]) < b.review_faces:
            by_reason[r["reason"]].append(r)
    for reason, rows in sorted(by_reason.items()):
        name = f"rejected_{reason}.jpg"
        contact_sheet([read_rgb(out / r["crop"]) for r in rows], [_short(r["candidate"]) for r in rows],
                      out / "review" / name)
        index += [(name, k, r["candidate"], reason) for k, r in enumerate(rows)]
    write_csv(out / "review" / "index.csv", ("sheet", "cell", "face_id", "reason"), index)


def _short(fid: str) -> str:
    """``s00003-000017`` -> ``3-17`` (sheet label)."""
    s, k = fid[1:].split("-")
    return f"{int(s)}-{int(k)}"
