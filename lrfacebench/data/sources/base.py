"""What every source reader produces: work items in a deterministic order, plus the problems it met.

A reader never opens image pixels (the shard workers do); it parses the official annotation
layout, checks that the files it names exist, and turns every unparseable line or missing file
into a :data:`Problem` instead of raising. Boxes are ``(x1, y1, x2, y2)`` floats in original
image pixels.
"""
from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from lrfacebench.io import list_images

Box = tuple[float, float, float, float]


class Problem(NamedTuple):
    """An input that could not be used: the file (relative to ``--root``), where in it, and why.

    ``line`` is a 1-based line number for text annotations, ``frame N`` for video frames,
    ``row N`` for matrix rows, or empty when the whole file is concerned.
    """

    file: str
    line: str
    reason: str


@dataclass(frozen=True)
class Annot:
    """One annotated box of an item.

    ``box``: the annotated box (PIPA head box, DukeMTMC person box, WIDER face box, HR crop
    square); ``roi``: where to search for a face (``None`` = the box itself); ``identity``:
    label or ``""``; ``ref``: where the annotation came from (``file:line``) for reports;
    ``attrs``: extra integer flags (WIDER blur/invalid/...); ``is_face``: the box is a face
    box (used as ground truth for detector evaluation and by ``gt`` mode); ``reject``: a reason
    the reader already knows for dropping this face (e.g. WIDER's ``invalid`` flag), recorded in
    ``rejected.csv`` like any filter's reason. The attr ``whole=1`` marks a pre-cropped face: the
    face is the whole image, and the worker sets ``box`` to the image's bounds when it reads the
    pixels (:func:`whole_image_face`), so the reader need not open the image.
    """

    box: Box
    roi: Box | None = None
    identity: str = ""
    ref: str = ""
    attrs: tuple[tuple[str, int], ...] = ()
    is_face: bool = False
    reject: str = ""

    def attr(self, name: str, default: int = 0) -> int:
        return dict(self.attrs).get(name, default)


@dataclass(frozen=True)
class Item:
    """One unit of work: a photo, a video frame or a paired-set image.

    ``source``: file path relative to ``--root`` (posix; the manifest's ``source``).
    ``frame``/``time_s``: video frame index and time (``None`` for photos).
    ``mode``: ``detect`` (detect in the whole image), ``roi`` (detect in the annots' ROIs),
    ``gt`` (the annots are the face boxes), ``paired`` (``annots[0].box`` is the HR crop square),
    ``scene`` (a photo shrunk by the reader's :class:`SceneRule`, then searched whole).
    ``split``/``identity``: defaults for every face of the item.
    """

    source: str
    mode: str = "detect"
    frame: int | None = None
    time_s: float | None = None
    split: str = ""
    identity: str = ""
    annots: tuple[Annot, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Item":
        annots = tuple(Annot(box=tuple(a["box"]), roi=tuple(a["roi"]) if a["roi"] else None,
                             identity=a["identity"], ref=a["ref"],
                             attrs=tuple(tuple(x) for x in a["attrs"]), is_face=a["is_face"],
                             reject=a["reject"])
                       for a in d["annots"])
        return cls(**{**d, "annots": annots})


class Pair(NamedTuple):
    """A verification pair of a protocol: the ``source`` paths of two items, whether they show the
    same person, and where the pair came from (``file:row N``). Written to ``pairs.csv``."""

    a: str
    b: str
    same: bool
    ref: str


@dataclass
class Scan:
    """A reader's result: ``items`` in build order, ``problems`` found while parsing, the
    annotation ``files`` it read (hashed into ``stats.json``), the folder ``root`` that item
    sources are relative to (``None``: the ``--root`` given; a video source given one file sets
    its parent folder) and the protocol's verification ``pairs`` of items (usually none)."""

    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    root: Path | None = None
    pairs: list[Pair] = field(default_factory=list)


@dataclass(frozen=True)
class LrRule:
    """How a paired reader makes its LR faces instead of ``DS(HR)`` (its module's ``RULE``).

    ``make(hr, item, options, size) -> (lr, values)``: ``hr`` is the quantised HR face
    ``(S,S,3)`` uint8 (S = ``build.hr_size``), ``options`` the reader's ``Options``, ``lr`` the
    ``(size,size,3)`` uint8 LR face and ``values`` the face's cells of the extra manifest
    ``columns`` (column -> meaning for the data card, in manifest order). ``text``: how the LR is
    made, one sentence for the data card.
    """

    make: Callable[[Any, Item, Any, int], tuple[Any, dict[str, Any]]]
    columns: dict[str, str]
    text: str


@dataclass(frozen=True)
class Shrunk:
    """A photo made small by a :class:`SceneRule`: ``image`` ``(h,w,3)`` uint8, ``scale`` = (sx, sy)
    small px per original px, the photo's manifest cells ``values``, and ``min_hr``: the smallest
    average face size (original px) kept as HR."""

    image: Any
    scale: tuple[float, float]
    values: dict[str, Any]
    min_hr: float


@dataclass(frozen=True)
class SceneRule:
    """How a reader of ``scene`` items makes genuine-looking LR faces with HR ground truth (its
    module's ``RULE``): each photo is shrunk, faces are detected and filtered in the small photo
    like any genuine-LR face, and each is paired with the same box cut from the original photo.

    ``shrink(image, item, options, detect_native) -> Shrunk | str``: ``image`` the original RGB
    uint8 photo, ``detect_native(image)`` the builder's detector at native scale (for a rule
    that sizes the shrink by the faces it finds); a string says why the photo is skipped.
    ``columns``/``text``: as for :class:`LrRule` (face cells: the photo's ``values`` plus
    ``hr_size``, the face's average size in original px).
    """

    shrink: Callable[[Any, Item, Any, Callable[[Any], list[Any]]], "Shrunk | str"]
    columns: dict[str, str]
    text: str


class LayoutError(ValueError):
    """The root does not hold the source's official layout; the message says what was expected."""


SPLIT_DIRS = ("train", "val", "test")  # a first folder of these names gives a plain folder's split


def split_dir(source: str) -> str:
    """The split named by the first folder of a relative posix path (``test/a.jpg`` -> ``test``), else ``""``."""
    top = source.split("/", 1)[0] if "/" in source else ""
    return top if top in SPLIT_DIRS else ""


def images_under(root: Path, source: str) -> list[Path]:
    """Every image below ``root`` (sorted, :func:`lrfacebench.io.list_images`); none is a layout error."""
    images = list_images(root)
    if not images:
        raise LayoutError(f"{source}: no images found under {root}")
    return images


def rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a posix string (the manifest's ``source``)."""
    return path.relative_to(root).as_posix()


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) of a text annotation file; undecodable bytes are
    replaced, so one bad byte spoils one line, not the file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            yield n, line.strip()


def xywh_box(x: float, y: float, w: float, h: float) -> Box:
    return (float(x), float(y), float(x) + float(w), float(y) + float(h))


def check_box(box: Box) -> str | None:
    """Reason why ``box`` is unusable before seeing the image (non-finite or empty), else ``None``."""
    if not all(math.isfinite(v) for v in box):
        return "non-finite box coordinates"
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"empty box (width {box[2] - box[0]:g}, height {box[3] - box[1]:g})"
    return None


def whole_image_face(ref: str) -> Annot:
    """The one face of a pre-cropped face image: a ground-truth face whose box the worker sets to
    the whole image (``whole=1``; the empty box here is never used)."""
    return Annot(box=(0.0, 0.0, 0.0, 0.0), ref=ref, is_face=True, attrs=(("whole", 1),))


def square_box(cx: float, cy: float, side: float) -> Box:
    h = side / 2
    return (cx - h, cy - h, cx + h, cy + h)


def find_file(root: Path, names: tuple[str, ...], subdirs: tuple[str, ...] = ("",)) -> Path | None:
    """First existing ``root/subdir/name`` (official releases move annotation files around)."""
    for sub in subdirs:
        for name in names:
            p = root / sub / name if sub else root / name
            if p.is_file():
                return p
    return None


def inside_fraction(face: Box, box: Box) -> float:
    """Fraction of ``face``'s area that lies inside ``box`` (0 for an empty face box)."""
    iw = max(0.0, min(face[2], box[2]) - max(face[0], box[0]))
    ih = max(0.0, min(face[3], box[3]) - max(face[1], box[1]))
    area = (face[2] - face[0]) * (face[3] - face[1])
    return iw * ih / area if area > 0 else 0.0


def best_annot(face: Box, annots: tuple[Annot, ...], min_overlap: float) -> Annot | None:
    """The labelled annotation a detected ``face`` belongs to, or ``None``.

    Eligible: annotations with an identity whose box holds at least ``min_overlap`` of the
    face's area (a face lies inside its head or person box, so IoU would be small by
    construction). Best: the one whose ROI centre (the head region of a person box, or the
    head box itself) is nearest to the face centre, relative to the ROI size -- in a crowd a
    person box also holds the faces of the people behind. Ties go to the earlier annotation.
    """
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    best, best_d = None, math.inf
    for a in annots:
        if not a.identity or inside_fraction(face, a.box) < min_overlap:
            continue
        x1, y1, x2, y2 = a.roi or a.box
        d = math.hypot((cx - (x1 + x2) / 2) / max(x2 - x1, 1e-9), (cy - (y1 + y2) / 2) / max(y2 - y1, 1e-9))
        if d < best_d:
            best, best_d = a, d
    return best


def read_dlib_xml(path: str | Path) -> dict[str, np.ndarray]:
    """dlib ``imglab`` XML (``<image file=...><box top left width height/>``) -> {file: (N,4) boxes}.

    Boxes marked ``ignore='1'`` are left out. Raises ``ValueError`` for malformed files.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ValueError(f"{path}: cannot read dlib XML: {e}") from None
    out: dict[str, np.ndarray] = {}
    for im in root.iter("image"):
        rows = []
        for bx in im.iter("box"):
            if bx.get("ignore", "0") == "1":
                continue
            try:
                x, y = float(bx.get("left")), float(bx.get("top"))  # type: ignore[arg-type]
                rows.append((x, y, x + float(bx.get("width")), y + float(bx.get("height"))))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"{path}: malformed box {bx.attrib} in {im.get('file')}") from None
        out[im.get("file", "")] = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return out
