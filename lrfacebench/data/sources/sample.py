"""The embedded sample ``lrfacebench/sample/`` -> a small genuine-LR dataset (no ``--root`` needed).

Parts (``parts`` option; items come part by part in that order):

* ``scenes``: the real photos in ``scenes/``, searched whole by the detector. The dlib/PASCAL VOC
  photos come with face-box annotations (``training.xml``, ``testing.xml``); they are attached as
  ground truth, so the build measures the detector's recall and precision on them.
* ``genuine_lr``: the native low-resolution crops in ``genuine_lr/`` (each crop is one face, the
  box is the whole crop), with the split given by ``provenance.csv``. Crops cut from a scene that
  the ``scenes`` part already searches are skipped: detection finds those faces again.

HR crops (``hr/``) are not part of this build: a manifest mixes no paired faces with genuine LR
ones (``lrfb train`` reads the sample's HR crops directly).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image

from lrfacebench.data.sources.base import Annot, Item, LayoutError, Problem, Scan, read_dlib_xml, rel
from lrfacebench.io import list_images

KIND = "genuine"
PARTS = ("scenes", "genuine_lr")
ANNOTATIONS = ("scenes/dlib_faces/training.xml", "scenes/dlib_faces/testing.xml")
SCENE_OF = re.compile(r"scene file in scenes/: (\S+)")


def default_root() -> Path:
    """The embedded sample folder inside the installed package."""
    return Path(str(resources.files("lrfacebench") / "sample"))


@dataclass
class Options:
    parts: tuple[str, ...] = PARTS
    scene_split: str = "train"  # split of faces found in scenes (the sample's genuine-LR crops from them are train)


def scan(root: Path, opts: Options) -> Scan:
    prov = root / "provenance.csv"
    if not prov.is_file():
        raise LayoutError(f"sample: expected provenance.csv in {root} (the embedded sample lrfacebench/sample/)")
    bad = set(opts.parts) - set(PARTS)
    if bad:
        raise ValueError(f"sample parts must be among {PARTS}, got {sorted(bad)}")
    out = Scan(files=[prov])
    with open(prov, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scenes = list_images(root / "scenes") if (root / "scenes").is_dir() else []
    searched = {rel(p, root / "scenes") for p in scenes} if "scenes" in opts.parts else set()
    for part in opts.parts:  # items in the order of `parts`, sorted by path within a part
        if part == "scenes":
            faces = _xml_faces(root, out)
            out.items.extend(Item(source=rel(p, root), mode="detect", split=opts.scene_split,
                                  annots=tuple(faces.get(rel(p, root), ()))) for p in scenes)
            continue
        crops = []
        for n, r in enumerate(rows, 2):
            m = SCENE_OF.search(r["notes"])
            if r["kind"] != "genuine_lr" or (m and m.group(1) in searched):
                continue
            item = _crop_item(root, r, n, out.problems)
            if item is not None:
                crops.append(item)
        out.items.extend(sorted(crops, key=lambda it: it.source))
    return out


def _xml_faces(root: Path, out: Scan) -> dict[str, list[Annot]]:
    """Face boxes of the dlib XML files, keyed by image path relative to the sample root."""
    faces: dict[str, list[Annot]] = {}
    for name in ANNOTATIONS:
        path = root / name
        if not path.is_file():
            continue
        out.files.append(path)
        try:
            boxes = read_dlib_xml(path)
        except ValueError as e:
            out.problems.append(Problem(name, "", str(e)))
            continue
        folder = Path(name).parent.as_posix()
        for file, b in boxes.items():
            faces.setdefault(f"{folder}/{file}", []).extend(
                Annot(box=tuple(float(v) for v in row), ref=name, is_face=True) for row in b)
    return faces


def _crop_item(root: Path, row: dict[str, str], line: int, problems: list[Problem]) -> Item | None:
    """A genuine-LR crop as a ``gt`` item whose one face box is the whole crop."""
    path = root / row["path"]
    try:
        with Image.open(path) as im:  # header only: the size of the crop
            w, h = im.size
    except (OSError, ValueError) as e:
        problems.append(Problem("provenance.csv", str(line), f"{row['path']}: {e}"))
        return None
    return Item(source=row["path"], mode="gt", split=row["split"],
                annots=(Annot(box=(0.0, 0.0, float(w), float(h)), ref=f"provenance.csv:{line}",
                              is_face=True, attrs=(("whole", 1),)),))
