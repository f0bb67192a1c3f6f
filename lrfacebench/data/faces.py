"""Face sets in memory, used by training, the benchmark and ``lrfb diagnose``.

A face set is decoded once into a ``uint8`` tensor ``(N,3,S,S)`` (S = 64 for HR, 16 for LR)
plus an identity index per face. Two sources:

* a folder written by ``lrfb build-dataset`` (``manifest.csv`` with ``lr16``/``hr64`` columns);
* the embedded sample ``lrfacebench/sample`` (``provenance.csv``): ``kind=hr`` rows are 128x128
  HR crops resized to 64x64, ``kind=genuine_lr`` rows native crops resized to 16x16, both with
  :func:`lrfacebench.degrade.imresize` (the same bicubic the dataset builder uses);
* any plain folder of face crops (:func:`list_folder`).

Errors are :class:`~lrfacebench.errors.DatasetError` with ``param`` ``"hr"``/``"lr"`` (the role
the folder was given for) where a folder was named.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from lrfacebench import io
from lrfacebench.data.manifest import REQUIRED_COLUMNS
from lrfacebench.degrade import imresize, to_uint8
from lrfacebench.errors import DatasetError
from lrfacebench.pixels import rgbs_to_uint8, to_unit_float

log = logging.getLogger(__name__)

Kind = Literal["hr", "lr"]
SIZES: dict[str, int] = {"hr": 64, "lr": 16}
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample"
ALL_SPLITS = ("all",)


@dataclass
class FaceList:
    """The rows of one face set before decoding: paths, labels and a content hash."""

    kind: Kind
    source: str  # the folder, or "sample"
    paths: list[Path]
    names: list[str]  # face ids (manifest) or relative paths (sample)
    labels: list[str]  # identity per face, "" when unknown
    sha256: str  # manifest.csv hash (built sets) or content hash of the files used (sample)
    splits: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def identities(self) -> tuple[str, ...]:
        """Sorted distinct identity labels; their position is the identity index."""
        return tuple(sorted({x for x in self.labels if x}))

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "kind": self.kind, "n_faces": len(self),
                "n_identities": len(self.identities), "splits": list(self.splits),
                "sha256": self.sha256}


@dataclass
class FaceSet:
    """Decoded faces.

    images:    ``(N,3,S,S)`` uint8 on the CPU (S = 64 for ``hr``, 16 for ``lr``).
    identity:  ``(N,)`` int64 index into ``identities``, -1 when unknown.
    landmarks: ``(N,5,2)`` float32 ``(x, y)`` in face pixels, NaN rows where none was found, or
               ``None`` when not detected (:func:`lrfacebench.data.landmarks.with_landmarks`).
    """

    kind: Kind
    images: torch.Tensor
    identity: torch.Tensor
    identities: tuple[str, ...]
    names: list[str]
    info: dict[str, object] = field(default_factory=dict)
    landmarks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_identities(self) -> int:
        return len(self.identities)


# ---------------------------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------------------------
def _select_splits(splits_of_rows: Sequence[str], wanted: Sequence[str], where: str,
                   param: str | None = None) -> list[bool]:
    """Row mask for ``wanted`` splits. ``("all",)`` keeps everything; a set without any split
    labels is used whole (logged); a set with labels but none of ``wanted`` is an error."""
    if tuple(wanted) == ALL_SPLITS:
        return [True] * len(splits_of_rows)
    present = sorted({s for s in splits_of_rows if s})
    if not present:
        log.info("%s has no split labels: using all %d faces", where, len(splits_of_rows))
        return [True] * len(splits_of_rows)
    mask = [s in wanted for s in splits_of_rows]
    if not any(mask):
        raise DatasetError(f"{where} has no faces in split(s) {list(wanted)}; it has {present} "
                           "(choose with --split, or --split all)", param)
    return mask


def list_dataset(root: str | Path, kind: Kind, splits: Sequence[str] = ("train",)) -> FaceList:
    """Rows of a built dataset folder for ``kind`` (``hr`` reads ``hr64``, ``lr`` reads ``lr16``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder", kind)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DatasetError(f"{root}: no manifest.csv; expected a folder written by "
                           "`lrfb build-dataset ... --out DIR`", kind)
    try:
        rows = pd.read_csv(manifest, dtype=str, keep_default_na=False).fillna("")
    except pd.errors.EmptyDataError:
        rows = pd.DataFrame()
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise DatasetError(f"{manifest}: missing column(s) {missing}; found {list(rows.columns)}")
    if rows.empty:
        raise DatasetError(f"{root}: manifest.csv has no faces (empty dataset)", kind)
    column = "hr64" if kind == "hr" else "lr16"
    with_image = rows[rows[column].str.strip() != ""]
    if with_image.empty:
        hint = ("it looks like a genuine-LR set: pass it with --lr, and a paired HR set "
                "(celeba, helen) with --hr") if kind == "hr" else "every lr16 cell is empty"
        raise DatasetError(f"{root}: no {column} images in manifest.csv; {hint}", kind)
    if len(with_image) < len(rows):
        log.warning("%s: %d of %d rows have no %s image and are skipped", root,
                    len(rows) - len(with_image), len(rows), column)
    inside = with_image[column].map(_inside)
    if not inside.any():
        raise DatasetError(f"{manifest}: every {column} path lies outside {root} (absolute or ../)", kind)
    if not inside.all():
        log.warning("%s: %d of %d rows name files outside the dataset folder (absolute or ../) and are "
                    "skipped", root, int((~inside).sum()), len(with_image))
        with_image = with_image[inside]
    chosen = with_image[_select_splits(with_image["split"].tolist(), splits, str(root), kind)]
    return FaceList(kind=kind, source=str(root), paths=[root / p for p in chosen[column]],
                    names=chosen["face_id"].tolist(), labels=chosen["identity"].str.strip().tolist(),
                    sha256=io.sha256_file(manifest), splits=tuple(splits))


def _inside(path: str) -> bool:
    """Whether a manifest's path stays inside the dataset folder: relative, without ``..``."""
    p = PurePosixPath(path.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts and not PureWindowsPath(path).drive


def list_folder(root: str | Path, kind: Kind) -> FaceList:
    """Every image below a plain folder (no manifest) as one unlabelled face set of any crop size
    (decoding resizes them to the set's size with :func:`lrfacebench.degrade.imresize`)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    paths = io.list_images(root)
    if not paths:
        raise DatasetError(f"{root}: no images (extensions {', '.join(io.IMAGE_EXTENSIONS)})")
    return FaceList(kind=kind, source=str(root), paths=paths,
                    names=[p.relative_to(root).as_posix() for p in paths], labels=[""] * len(paths),
                    sha256=io.sha256_tree(root, paths), splits=ALL_SPLITS)


def list_sample(kind: Kind, splits: Sequence[str] = ("train",), root: Path = SAMPLE_DIR) -> FaceList:
    """Rows of the embedded sample: ``hr`` = its HR crops, ``lr`` = its genuine-LR crops."""
    rows = pd.read_csv(root / "provenance.csv", dtype=str, keep_default_na=False).fillna("")
    rows = rows[rows["kind"] == ("hr" if kind == "hr" else "genuine_lr")]
    if rows.empty:
        raise DatasetError(f"{root}: the sample has no {kind} faces")
    chosen = rows[_select_splits(rows["split"].tolist(), splits, f"sample {kind}")]
    paths = [root / p for p in chosen["path"]]
    return FaceList(kind=kind, source="sample", paths=paths, names=chosen["path"].tolist(),
                    labels=chosen["identity"].str.strip().tolist(),
                    sha256=io.sha256_tree(root, paths + [root / "provenance.csv"]), splits=tuple(splits))


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------
def load_faces(faces: FaceList, workers: int = 8) -> FaceSet:
    """Decode every face of ``faces`` once into a :class:`FaceSet`.

    Faces of the target size (64 HR, 16 LR) are decoded straight into the uint8 tensor; others
    are resized with ``degrade.imresize`` and quantised with ``to_uint8`` (the sample always; a
    built set only if it holds odd sizes, which is logged). Unreadable files are skipped,
    counted and logged; none left is an error.
    """
    size = SIZES[faces.kind]
    images = torch.empty((len(faces), 3, size, size), dtype=torch.uint8)
    target = images.permute(0, 2, 3, 1).numpy()  # (N,S,S,3) view written by the workers

    def read(i: int) -> np.ndarray | str | None:
        """None: written into ``images``; an array: needs resizing; a string: why unreadable."""
        try:
            rgb = io.read_rgb(faces.paths[i])
        except io.UnreadableImage as e:
            return str(e)
        if rgb.shape[:2] == (size, size):
            target[i] = rgb
            return None
        return rgb

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(read, range(len(faces)), chunksize=64))
    bad = [(str(faces.paths[i]), d) for i, d in enumerate(decoded) if isinstance(d, str)]
    for path, why in bad[:10]:
        log.warning("unreadable face skipped: %s (%s)", path, why)
    if bad:
        log.warning("%s %s: %d of %d faces unreadable and skipped", faces.source, faces.kind,
                    len(bad), len(faces))
    keep = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    if not keep:
        raise DatasetError(f"{faces.source}: none of the {len(faces)} {faces.kind} faces could be read")
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, d in enumerate(decoded):
        if isinstance(d, np.ndarray):
            by_shape[d.shape[:2]].append(i)
    for idx in by_shape.values():
        images[idx] = to_uint8(imresize(to_unit_float(rgbs_to_uint8([decoded[i] for i in idx])), (size, size)))
    resized = sum(map(len, by_shape.values()))
    if resized and faces.source != "sample":
        log.warning("%s: %d %s faces were not %dx%d and were resized", faces.source, resized,
                    faces.kind, size, size)
    if len(keep) < len(faces):
        images = images[keep]
    identities = faces.identities
    index = {name: i for i, name in enumerate(identities)}
    labels = torch.tensor([index.get(faces.labels[i], -1) for i in keep], dtype=torch.int64)
    info = {**faces.describe(), "n_faces": len(keep), "n_unreadable": len(bad)}
    return FaceSet(faces.kind, images, labels, identities, [faces.names[i] for i in keep], info)
