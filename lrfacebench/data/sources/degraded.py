"""HR faces of any folder -> a paired test set whose LR is a real-world degradation of the HR,
not ``DS(HR)`` (the chain: :mod:`lrfacebench.data.degradations`).

Inputs (``--root``), recognised in this order:

1. a dataset built by ``lrfb build-dataset celeba|helen|...`` (``manifest.csv`` with an ``hr64``
   column): its 64x64 HR faces with their identity and split; rows naming a missing file are
   reported and skipped;
2. the embedded sample (``provenance.csv``): its ``kind=hr`` crops with identity and split;
3. any tree of HR face images: each image is one face (the whole image, made square about its
   centre by edge replication where it is not). A first folder named ``train``, ``val`` or
   ``test`` gives the split; the folders between it (or the root) and the file give the identity
   (``test/alice/1.jpg`` and ``alice/1.jpg`` -> ``alice``; ``a/b/1.jpg`` -> ``a/b``; files
   directly in the root or the split folder have none).

A face without a split gets ``default_split`` (``test``: the set is a test set); ``splits``
then picks the faces to build. HR = the face resized to 64x64 with ``degrade.imresize`` (as for
every paired set); LR = :func:`degradations.apply` of that quantised HR with parameters drawn by
:func:`degradations.sample` from ``numpy.random.default_rng(derive_seed(seed, "degraded",
source))``: a pure function of the seed and the face's input path, so shards are independent,
a rerun is byte-identical and another seed gives another set.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lrfacebench.data import degradations
from lrfacebench.data.sources.base import SPLIT_DIRS, Annot, Item, LayoutError, LrRule, Problem, Scan, images_under, rel
from lrfacebench.runtime import derive_seed

KIND = "paired"
# The whole image: a box stated for a 1x1 reference image, scaled to the image's own size.
WHOLE = Annot(box=(0.0, 0.0, 1.0, 1.0), attrs=(("ref_w", 1), ("ref_h", 1)))


@dataclass
class Options:
    seed: int = 0  # degradation parameters = f(seed, face path)
    splits: tuple[str, ...] = SPLIT_DIRS  # splits to build (after default_split)
    default_split: str = "test"  # split of faces the input gives none
    identity_from_dir: bool = True  # plain folders: folder path below the split folder = identity
    chain: degradations.Chain = field(default_factory=degradations.Chain)


def scan(root: Path, opts: Options) -> Scan:
    if not root.is_dir():
        raise LayoutError(f"degraded: {root} is not a folder of HR faces")
    out = Scan()
    if (root / "manifest.csv").is_file():
        faces = _table(root, "manifest.csv", "hr64", lambda r: True, out)
    elif (root / "provenance.csv").is_file():
        faces = _table(root, "provenance.csv", "path", lambda r: r.get("kind") == "hr", out)
    else:
        faces = _tree(root, opts)
    for source, identity, split in faces:
        split = split or opts.default_split
        if split in opts.splits:
            out.items.append(Item(source=source, mode="paired", split=split, identity=identity, annots=(WHOLE,)))
    return out


def _table(root: Path, name: str, column: str, wanted: Callable[[dict[str, str]], bool], out: Scan
           ) -> list[tuple[str, str, str]]:
    """(path, identity, split) of the rows of a built manifest or the sample's provenance."""
    path = root / name
    out.files.append(path)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or ()):
            raise LayoutError(f"degraded: {path} has no {column!r} column; expected a paired set built by "
                              "lrfb build-dataset (celeba, helen), the embedded sample or a folder of HR faces")
        rows = [(n, r) for n, r in enumerate(reader, 2) if wanted(r) and (r[column] or "").strip()]
    if not rows:
        raise LayoutError(f"degraded: {path} names no HR faces (empty {column!r} column: a genuine-LR set?)")
    faces = []
    for n, r in rows:
        source = r[column].strip()
        if not (root / source).is_file():
            out.problems.append(Problem(name, str(n), f"listed HR face {source} is missing"))
            continue
        faces.append((source, (r.get("identity") or "").strip(), (r.get("split") or "").strip()))
    return faces


def _tree(root: Path, opts: Options) -> list[tuple[str, str, str]]:
    images = images_under(root, "degraded")
    faces = []
    for p in images:
        source = rel(p, root)
        folders = source.split("/")[:-1]
        split = folders.pop(0) if folders and folders[0] in SPLIT_DIRS else ""
        faces.append((source, "/".join(folders) if opts.identity_from_dir else "", split))
    return faces


def degrade(hr: np.ndarray, item: Item, opts: Options, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The face's LR ``(size,size,3)`` uint8 from its HR ``(64,64,3)`` uint8, and its manifest cells."""
    rng = np.random.default_rng(derive_seed(opts.seed, "degraded", item.source))
    params = degradations.sample(rng, opts.chain)
    last = params["passes"][-1]
    values = {"passes": len(params["passes"]), "source_size": last["resize"]["size"],
              "jpeg_quality": last["jpeg"]["quality"] if "jpeg" in last else "",
              "degradation": degradations.to_json(params)}
    return degradations.apply(hr, params, size), values


RULE = LrRule(
    make=degrade,
    columns={"passes": "degradation passes applied (1 or 2)",
             "source_size": "face size (px) before the final resize to 16x16 (the last pass's resize)",
             "jpeg_quality": "JPEG quality of the last pass (empty: no JPEG in it)",
             "degradation": "every parameter of the chain as compact JSON "
                            "(lrfacebench.data.degradations.apply(hr64, json.loads(cell)) == lr16)"},
    text="LR = `lrfacebench.data.degradations` (blur, resize to a source size, noise, JPEG; once or twice) of "
         "the quantised HR, parameters drawn per face from (source.seed, input path) within the ranges of "
         "`source.chain` and stored in the manifest's `degradation` column; the last step is "
         "`degrade.imresize` (bicubic) to 16x16.",
)
