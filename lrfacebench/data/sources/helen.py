"""Helen (Le et al., ECCV 2012) -> the artificial-LR test set of Table 3.

Layout: images ``<root>/{trainset,testset}/*.jpg`` (2,000 + 330), or flat in ``<root>/``;
landmarks ``<root>/annotation/<n>.txt``: first line the image name (no extension), then 194
lines ``x , y``.

Crop rule (fixed, CelebA-like framing): the bounding box of the 194 landmarks (jaw line to
eyebrows) is made square with side ``scale`` x its longer side, centred on the box centre
moved by ``shift_y`` x side (negative = up, to include the forehead as CelebA's crop does).
The defaults 1.45 and -0.12 put the landmark box where it sits in the 128x128 CelebA crop
(jaw width about 88 px, brow-to-chin centre about 15 px below the crop centre). Pixels outside
the image are filled by edge replication. The crop is resized to 64x64 (HR); DS gives 16x16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lrfacebench.data.sources.base import (Annot, Item, LayoutError, Problem, Scan, check_box, rel,
                                           square_box, text_lines)
from lrfacebench.io import is_image

KIND = "paired"
N_LANDMARKS = 194
FOLDERS = {"trainset": "train", "testset": "test", "": ""}


@dataclass
class Options:
    scale: float = 1.45
    shift_y: float = -0.12
    splits: tuple[str, ...] = ("train", "test", "")  # "" = images stored flat in the root


def scan(root: Path, opts: Options) -> Scan:
    ann_dir = root / "annotation"
    if not ann_dir.is_dir():
        raise LayoutError(f"Helen: expected landmark files in {ann_dir} (official layout: "
                          "{trainset,testset}/*.jpg or flat images + annotation/<n>.txt)")
    images: dict[str, tuple[Path, str]] = {}
    for folder, split in FOLDERS.items():
        d = root / folder if folder else root
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.is_file() and is_image(p):
                    images.setdefault(p.stem, (p, split))
    out = Scan()
    seen: set[str] = set()
    files = sorted(ann_dir.glob("*.txt"),
                   key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))
    for ann in files:
        out.files.append(ann)
        parsed = _landmarks(ann, root, out.problems)
        if parsed is None:
            continue
        name, pts = parsed
        seen.add(name)
        if name not in images:
            out.problems.append(Problem(rel(ann, root), "1",
                                        f"image {name}.jpg not found in trainset/, testset/ or the root"))
            continue
        path, split = images[name]
        if split not in opts.splits:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        side = opts.scale * max(x2 - x1, y2 - y1)
        crop = square_box((x1 + x2) / 2, (y1 + y2) / 2 + opts.shift_y * side, side)
        if (why := check_box(crop)) is not None:
            out.problems.append(Problem(rel(ann, root), "", f"landmark crop: {why}"))
            continue
        out.items.append(Item(source=rel(path, root), mode="paired", split=split,
                              annots=(Annot(box=crop, ref=rel(ann, root)),)))
    for name in sorted(set(images) - seen):
        out.problems.append(Problem(rel(images[name][0], root), "", "no landmark annotation for this image"))
    out.items.sort(key=lambda it: it.source)
    return out


def _landmarks(path: Path, root: Path,
               problems: list[Problem]) -> tuple[str, list[tuple[float, float]]] | None:
    """(image name, 194 points) of one annotation file, or ``None`` after reporting why not."""
    name, pts = "", []
    where = rel(path, root)
    for n, line in text_lines(path):
        if n == 1:
            name = line
            continue
        if not line:
            continue
        parts = [v.strip() for v in line.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError(f"expected 'x , y', got {line[:40]!r}")
            pt = (float(parts[0]), float(parts[1]))
            if not all(map(math.isfinite, pt)):
                raise ValueError(f"non-finite landmark {line[:40]!r}")
            pts.append(pt)
        except ValueError as e:
            problems.append(Problem(where, str(n), str(e)))
    if not name:
        problems.append(Problem(where, "1", "empty file or missing image name"))
        return None
    if len(pts) != N_LANDMARKS:
        problems.append(Problem(where, "", f"{len(pts)} valid landmarks, expected {N_LANDMARKS}; image skipped"))
        return None
    return name, pts
