"""Any tree of images (jpg, png, webp, bmp, tif, pgm) -> genuine LR faces found by detection.

Optional sidecar boxes: a CSV ``boxes`` (path relative to the root) with columns
``path,x1,y1,x2,y2`` and optionally ``identity``. With ``boxes_mode = "roi"`` faces are
searched in those boxes and take the identity of the box they overlap best; with ``"gt"`` the
boxes are the faces. Images without sidecar boxes are searched whole. A first folder named
``train``, ``val`` or ``test`` gives the split.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lrfacebench.data.sources.base import Annot, Item, LayoutError, Problem, Scan, check_box, images_under, rel, split_dir

KIND = "genuine"


@dataclass
class Options:
    boxes: str = ""  # optional sidecar CSV (path,x1,y1,x2,y2[,identity]) relative to the root
    boxes_mode: str = "roi"  # "roi": detect inside the boxes; "gt": the boxes are the faces
    split_from_dir: bool = True  # <root>/{train,val,test}/... sets the split


def scan(root: Path, opts: Options) -> Scan:
    if not root.is_dir():
        raise LayoutError(f"folder: {root} is not a directory of images")
    if opts.boxes_mode not in ("roi", "gt"):
        raise ValueError(f"boxes_mode must be 'roi' or 'gt', got {opts.boxes_mode!r}")
    out = Scan()
    sidecar = _sidecar(root, opts, out) if opts.boxes else {}
    images = images_under(root, "folder")
    known = set()
    for path in images:
        source = rel(path, root)
        known.add(source)
        annots = tuple(sidecar.get(source, ()))
        mode = opts.boxes_mode if annots else "detect"
        out.items.append(Item(source=source, mode=mode, annots=annots,
                              split=split_dir(source) if opts.split_from_dir else ""))
    for source in sorted(set(sidecar) - known):
        out.problems.append(Problem(opts.boxes, sidecar[source][0].ref.rsplit(":", 1)[1],
                                    f"boxes for missing image {source}"))
    return out


def _sidecar(root: Path, opts: Options, out: Scan) -> dict[str, list[Annot]]:
    path = root / opts.boxes
    if not path.is_file():
        raise LayoutError(f"folder: sidecar boxes file {path} not found")
    out.files.append(path)
    boxes: dict[str, list[Annot]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        missing = {"path", "x1", "y1", "x2", "y2"} - set(reader.fieldnames or ())
        if missing:
            raise LayoutError(f"{path}: missing column(s) {sorted(missing)}; expected path,x1,y1,x2,y2[,identity]")
        for n, row in enumerate(reader, 2):
            try:
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            except (TypeError, ValueError) as e:
                out.problems.append(Problem(opts.boxes, str(n), f"bad box: {e}"))
                continue
            if (why := check_box(box)) is not None:
                out.problems.append(Problem(opts.boxes, str(n), why))
                continue
            boxes[row["path"].strip()].append(Annot(box=box, identity=(row.get("identity") or "").strip(),
                                                    ref=f"{opts.boxes}:{n}", is_face=opts.boxes_mode == "gt"))
    return boxes
