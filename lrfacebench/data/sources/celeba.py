"""CelebA (Liu et al., ICCV 2015) -> auxiliary HR faces with artificial-LR pairs.

Layout: ``<root>/img_align_celeba/000001.jpg ... 202599.jpg`` (178x218, eyes at fixed places),
``identity_CelebA.txt`` (``000001.jpg 2880``) and ``list_eval_partition.txt`` (``000001.jpg 0``;
0 train, 1 val, 2 test), at the root or in ``Anno/`` and ``Eval/``.

Crop rule (fixed): the square ``crop_box`` of the aligned image, by default x 25-153, y 57-185,
i.e. 128x128 centred at (89, 121): eyes (about y 111) sit at 42 % of the crop height, the mouth
(about y 152) at 74 %, chin and forehead inside. It is resized to 64x64 (HR) and DS gives the
16x16 LR. Images whose size is not 178x218 get the box scaled with the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lrfacebench.data.sources.base import (Annot, Item, LayoutError, Problem, Scan, find_file, rel,
                                           text_lines)
from lrfacebench.io import is_image

KIND = "paired"
ALIGNED_SIZE = (178, 218)
PARTITIONS = {"0": "train", "1": "val", "2": "test"}


@dataclass
class Options:
    crop_box: tuple[float, float, float, float] = (25, 57, 153, 185)  # x1,y1,x2,y2 in 178x218 pixels
    splits: tuple[str, ...] = ("train", "val", "test")  # CelebA partitions to read


def scan(root: Path, opts: Options) -> Scan:
    images = root / "img_align_celeba"
    if not images.is_dir():
        raise LayoutError(f"CelebA: expected the aligned images in {images} (official layout: "
                          "img_align_celeba/000001.jpg + identity_CelebA.txt + list_eval_partition.txt)")
    x1, y1, x2, y2 = opts.crop_box
    if abs((x2 - x1) - (y2 - y1)) > 1e-6 or x2 <= x1:
        raise ValueError(f"crop_box must be a non-empty square, got {opts.crop_box}")
    out = Scan()
    identity = _table(root, "identity_CelebA.txt", ("", "Anno"), out, lambda v: f"celeba:{int(v)}")
    split = _table(root, "list_eval_partition.txt", ("", "Eval"), out, lambda v: PARTITIONS[v])
    crop = Annot(box=tuple(float(v) for v in opts.crop_box),
                 attrs=(("ref_w", ALIGNED_SIZE[0]), ("ref_h", ALIGNED_SIZE[1])))
    present = {p.name: p for p in images.iterdir() if p.is_file() and is_image(p)}
    for name in sorted(present):
        s = split.get(name, "")
        if split and s not in opts.splits:
            continue
        out.items.append(Item(source=rel(present[name], root), mode="paired", split=s,
                              identity=identity.get(name, ""), annots=(crop,)))
    for table, fname in ((identity, "identity_CelebA.txt"), (split, "list_eval_partition.txt")):
        missing = sorted(set(table) - set(present))
        for name in missing[:20]:
            out.problems.append(Problem(fname, "", f"listed image {name} is missing from img_align_celeba/"))
        if len(missing) > 20:
            out.problems.append(Problem(fname, "", f"... and {len(missing) - 20} more listed images missing"))
    return out


def _table(root: Path, name: str, subdirs: tuple[str, ...], out: Scan,
           parse: Callable[[str], str]) -> dict[str, str]:
    """``file name -> parsed value`` of a two-column CelebA list; bad lines become problems."""
    path = find_file(root, (name,), subdirs)
    if path is None:
        out.problems.append(Problem(name, "", "file not found; the field stays empty"))
        return {}
    out.files.append(path)
    table: dict[str, str] = {}
    for n, line in text_lines(path):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 2:
                raise ValueError(f"expected 2 fields, got {len(parts)}")
            table[parts[0]] = parse(parts[1])
        except (ValueError, KeyError) as e:
            out.problems.append(Problem(rel(path, root), str(n), f"cannot parse {line[:60]!r}: {e}"))
    return table
