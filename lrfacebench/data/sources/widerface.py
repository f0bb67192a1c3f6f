"""WIDER FACE (Yang et al., CVPR 2016) -> the genuine-LR training faces.

Layout: images ``<root>/WIDER_{train,val}/images/<event>/<name>.jpg``; boxes in
``<root>/wider_face_split/wider_face_{train,val}_bbx_gt.txt`` as repeating records: the image
path relative to ``images/``, the number of faces n, then n lines
``x1 y1 w h blur expression illumination invalid occlusion pose`` (one line of zeros when n=0).

By default the ground-truth boxes are the faces (``gt`` mode): boxes flagged ``invalid`` are
rejected with reason ``gt_invalid``, boxes blurrier than ``max_blur`` with ``gt_blur``, and the
rest go through the size and quality filters. With ``detect = true`` the detector runs in the
ground-truth boxes instead (``roi`` mode) and supplies scores and landmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lrfacebench.data.sources.base import (Annot, Item, LayoutError, Problem, Scan, check_box, rel,
                                           text_lines, xywh_box)
from lrfacebench.io import is_image

KIND = "genuine"
ATTRS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
SPLITS = ("train", "val")


@dataclass
class Options:
    splits: tuple[str, ...] = SPLITS
    max_blur: int = 2  # WIDER blur flag: 0 clear, 1 normal, 2 heavy (2 keeps every box)
    detect: bool = False  # run the detector in the ground-truth boxes (scores + landmarks)


def gt_file(split: str) -> str:
    return f"wider_face_split/wider_face_{split}_bbx_gt.txt"


def scan(root: Path, opts: Options) -> Scan:
    bad = set(opts.splits) - set(SPLITS)
    if bad:
        raise ValueError(f"WIDER FACE splits must be among {SPLITS}, got {sorted(bad)}")
    out = Scan()
    for split in opts.splits:
        gt = root / gt_file(split)
        if not gt.is_file():
            raise LayoutError(f"WIDER FACE: expected {gt_file(split)} under {root} (official layout: "
                              "WIDER_{train,val}/images/<event>/<name>.jpg + wider_face_split/)")
        out.files.append(gt)
        if gt.stat().st_size == 0:
            raise LayoutError(f"WIDER FACE: {gt_file(split)} under {root} is empty")
        first: dict[str, int] = {}
        for path_line, image, annots in _records(gt_file(split), gt, opts, out.problems):
            if image in first:
                out.problems.append(Problem(gt_file(split), str(path_line), f"{image} listed twice (first at line "
                                            f"{first[image]}); this record is skipped"))
                continue
            first[image] = path_line
            path = root / f"WIDER_{split}" / "images" / image
            if not path.is_file():
                out.problems.append(Problem(gt_file(split), str(path_line), f"missing image {rel(path, root)}"))
                continue
            out.items.append(Item(source=rel(path, root), mode="roi" if opts.detect else "gt",
                                  split=split, annots=tuple(annots)))
    return out


def _records(name: str, gt: Path, opts: Options,
             problems: list[Problem]) -> Iterator[tuple[int, str, list[Annot]]]:
    """Yield (line of the image path, image path, annots) per record; bad lines become problems
    and parsing resynchronises at the next image path."""
    lines = [(n, s) for n, s in text_lines(gt) if s]
    i = 0
    while i < len(lines):
        n, line = lines[i]
        i += 1
        if not is_image(line):
            problems.append(Problem(name, str(n), f"expected an image path, got {line[:60]!r}"))
            continue
        if i >= len(lines) or not lines[i][1].isdigit():
            problems.append(Problem(name, str(lines[i][0] if i < len(lines) else n),
                                    "expected the number of faces after the image path"))
            i += i < len(lines) and not is_image(lines[i][1])  # skip the bad count line
            continue
        count = int(lines[i][1])
        i += 1
        annots: list[Annot] = []
        for _ in range(max(count, 1)):  # n = 0 is followed by one line of zeros
            if i >= len(lines) or is_image(lines[i][1]):
                problems.append(Problem(name, str(n), f"record of {line} ended after {len(annots)} of {count} faces"))
                break
            fn, face = lines[i]
            i += 1
            if count == 0:
                continue
            annot = _face(face, name, fn, opts, problems)
            if annot is not None:
                annots.append(annot)
        yield n, line, annots


def _face(line: str, name: str, n: int, opts: Options, problems: list[Problem]) -> Annot | None:
    try:
        nums = [float(v) for v in line.split()]
    except ValueError:
        problems.append(Problem(name, str(n), f"face line is not numbers: {line[:60]!r}"))
        return None
    if not all(map(math.isfinite, nums)):  # inf, 1e400, nan: no pixel position, no flag
        problems.append(Problem(name, str(n), f"face line has non-finite numbers: {line[:60]!r}"))
        return None
    vals = [int(v) for v in nums]
    if len(vals) < 4:
        problems.append(Problem(name, str(n), f"face line has {len(vals)} numbers, expected 10"))
        return None
    box = xywh_box(*vals[:4])
    if (why := check_box(box)) is not None:
        problems.append(Problem(name, str(n), why))
        return None
    attrs = tuple(zip(ATTRS, vals[4:10]))
    a = dict(attrs)
    reject = "gt_invalid" if a.get("invalid", 0) == 1 else ("gt_blur" if a.get("blur", 0) > opts.max_blur else "")
    return Annot(box=box, ref=f"{name}:{n}", attrs=attrs, is_face=True, reject=reject)
