"""PIPA (People In Photo Albums, Zhang et al. CVPR 2015) -> LR-PIPA.

Layout: ``<root>/{train,val,test,leftover}/<photoset_id>_<photo_id>.jpg`` and
``<root>/annotations/index.txt`` with one HEAD box per line:
``photoset_id photo_id xmin ymin width height identity_id subset_id`` (subset 0 leftover,
1 train, 2 val, 3 test). Head boxes may extend past the image border.

Each photo becomes an ``roi`` item: faces are searched in the (up-sampled) head boxes and a
face takes the identity ``pipa:<identity_id>`` of the head box it overlaps best.
Split: train/val/test as PIPA defines; ``leftover`` photos get an empty split (the manifest
contract allows only train|val|test|empty).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lrfacebench.data.sources.base import (Annot, Item, LayoutError, Problem, Scan, check_box, rel,
                                           text_lines, xywh_box)

KIND = "genuine"
SUBSETS = {0: "leftover", 1: "train", 2: "val", 3: "test"}
INDEX = "annotations/index.txt"


@dataclass
class Options:
    subsets: tuple[str, ...] = ("train", "val", "test", "leftover")  # which PIPA subsets to read


def scan(root: Path, opts: Options) -> Scan:
    index = root / INDEX
    if not index.is_file():
        raise LayoutError(f"PIPA: expected {INDEX} under {root} (official layout: "
                          "<root>/{train,val,test,leftover}/<photoset>_<photo>.jpg + annotations/index.txt)")
    unknown = set(opts.subsets) - set(SUBSETS.values())
    if unknown:
        raise ValueError(f"PIPA subsets must be among {sorted(SUBSETS.values())}, got {sorted(unknown)}")
    out = Scan(files=[index])
    photos: dict[str, tuple[str, int, list[Annot]]] = {}  # stem -> (subset, first line, annots)
    for n, line in text_lines(index):
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 8:
            out.problems.append(Problem(INDEX, str(n), f"expected 8 fields, got {len(parts)}"))
            continue
        try:
            x, y, w, h = (float(v) for v in parts[2:6])
            identity, subset_id = int(parts[6]), int(parts[7])
        except ValueError as e:
            out.problems.append(Problem(INDEX, str(n), f"not a number: {e}"))
            continue
        if subset_id not in SUBSETS:
            out.problems.append(Problem(INDEX, str(n), f"unknown subset_id {subset_id} (expected 0-3)"))
            continue
        box = xywh_box(x, y, w, h)
        if (why := check_box(box)) is not None:
            out.problems.append(Problem(INDEX, str(n), why))
            continue
        stem = f"{parts[0]}_{parts[1]}"
        subset, first, annots = photos.setdefault(stem, (SUBSETS[subset_id], n, []))
        if SUBSETS[subset_id] != subset:
            out.problems.append(Problem(INDEX, str(n), f"photo {stem} listed in subsets {subset} and "
                                        f"{SUBSETS[subset_id]}; using {subset}"))
        annots.append(Annot(box=box, identity=f"pipa:{identity}", ref=f"{INDEX}:{n}"))
    for stem, (subset, first, annots) in photos.items():
        if subset not in opts.subsets:
            continue
        path = _find_photo(root, stem, subset)
        if path is None:
            out.problems.append(Problem(INDEX, str(first), f"missing image {subset}/{stem}.jpg"))
            continue
        out.items.append(Item(source=rel(path, root), mode="roi", annots=tuple(annots),
                              split="" if subset == "leftover" else subset))
    out.items.sort(key=lambda it: it.source)
    return out


def _find_photo(root: Path, stem: str, subset: str) -> Path | None:
    """The photo in its subset folder, or (moved by a user) in another subset folder."""
    for folder in (subset, *SUBSETS.values()):
        for ext in (".jpg", ".JPG", ".jpeg", ".png"):
            p = root / folder / f"{stem}{ext}"
            if p.is_file():
                return p
    return None
