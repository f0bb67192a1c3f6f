"""Face sets in memory and the on-device batch feeder used by training and the benchmarks.

A face set is decoded once into a ``uint8`` tensor ``(N,3,S,S)`` (S = 64 for HR, 16 for LR)
plus an identity index per face. Two sources:

* a folder written by ``lrfb build-dataset`` (``manifest.csv`` with ``lr16``/``hr64`` columns);
* the embedded sample ``lrfacebench/sample`` (``provenance.csv``): ``kind=hr`` rows are 128x128
  HR crops resized to 64x64, ``kind=genuine_lr`` rows native crops resized to 16x16, both with
  :func:`lrfacebench.degrade.imresize` (the same bicubic the dataset builder uses).

The :class:`Feeder` draws :class:`~lrfacebench.methods.base.Batch` objects on the device with
no per-image Python work: one index tensor per stream into the resident uint8 tensor, a
float conversion, and ``lr_artificial = DS(hr)`` computed on the device and quantised to uint8
levels (clamped to [0,1]) like every stored LR face.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from lrfacebench import io
from lrfacebench.degrade import downsample, imresize, to_uint8
from lrfacebench.methods.base import Batch, Stage

log = logging.getLogger(__name__)

Kind = Literal["hr", "lr"]
SIZES: dict[str, int] = {"hr": 64, "lr": 16}
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample"
MANIFEST_COLUMNS = ("face_id", "identity", "split", "lr16", "hr64")
ALL_SPLITS = ("all",)


class DatasetError(ValueError):
    """A dataset folder that cannot be used as asked; the message says what was expected."""


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

    images:   ``(N,3,S,S)`` uint8 on the CPU (S = 64 for ``hr``, 16 for ``lr``).
    identity: ``(N,)`` int64 index into ``identities``, -1 when unknown.
    """

    kind: Kind
    images: torch.Tensor
    identity: torch.Tensor
    identities: tuple[str, ...]
    names: list[str]
    info: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_identities(self) -> int:
        return len(self.identities)


# ---------------------------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------------------------
def _select_splits(splits_of_rows: Sequence[str], wanted: Sequence[str], where: str) -> list[bool]:
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
                           "(choose with --split, or --split all)")
    return mask


def list_dataset(root: str | Path, kind: Kind, splits: Sequence[str] = ("train",)) -> FaceList:
    """Rows of a built dataset folder for ``kind`` (``hr`` reads ``hr64``, ``lr`` reads ``lr16``)."""
    root = Path(root)
    flag = "--hr" if kind == "hr" else "--lr"
    if not root.is_dir():
        raise DatasetError(f"{flag} {root}: not a folder")
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DatasetError(f"{flag} {root}: no manifest.csv; expected a folder written by "
                           "`lrfb build-dataset ... --out DIR`")
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{manifest}: missing column(s) {missing}; found {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{flag} {root}: manifest.csv has no faces (empty dataset)")
    column = "hr64" if kind == "hr" else "lr16"
    with_image = [r for r in rows if (r[column] or "").strip()]
    if not with_image:
        hint = ("it looks like a genuine-LR set: pass it with --lr, and a paired HR set "
                "(celeba, helen) with --hr") if kind == "hr" else "every lr16 cell is empty"
        raise DatasetError(f"{flag} {root}: no {column} images in manifest.csv; {hint}")
    if len(with_image) < len(rows):
        log.warning("%s: %d of %d rows have no %s image and are skipped", root,
                    len(rows) - len(with_image), len(rows), column)
    mask = _select_splits([r["split"] or "" for r in with_image], splits, f"{flag} {root}")
    chosen = [r for r, keep in zip(with_image, mask) if keep]
    return FaceList(kind=kind, source=str(root), paths=[root / r[column] for r in chosen],
                    names=[r["face_id"] for r in chosen],
                    labels=[(r["identity"] or "").strip() for r in chosen],
                    sha256=io.sha256_file(manifest), splits=tuple(splits))


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
    with open(root / "provenance.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == ("hr" if kind == "hr" else "genuine_lr")]
    if not rows:
        raise DatasetError(f"{root}: the sample has no {kind} faces")
    mask = _select_splits([r["split"] or "" for r in rows], splits, f"sample {kind}")
    chosen = [r for r, keep in zip(rows, mask) if keep]
    paths = [root / r["path"] for r in chosen]
    return FaceList(kind=kind, source="sample", paths=paths, names=[r["path"] for r in chosen],
                    labels=[(r["identity"] or "").strip() for r in chosen],
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
        arr = torch.from_numpy(np.stack([decoded[i] for i in idx])).permute(0, 3, 1, 2)
        images[idx] = to_uint8(imresize(arr.float() / 255.0, (size, size)))
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


# ---------------------------------------------------------------------------------------------
# feeding
# ---------------------------------------------------------------------------------------------
def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _fits_on(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < 0.25 * free


class _Stream:
    """Epoch permutations over ``n`` items, shared by all ranks; rank ``r`` of ``w`` takes the
    ``r``-th slice of each global batch, so an epoch is seen once across the ranks."""

    def __init__(self, n: int, seed: int, name: str, device: torch.device) -> None:
        self.n, self.seed, self.name, self.device = n, seed, name, device
        self._perms: dict[tuple[int, int], torch.Tensor] = {}

    def _perm(self, stage_index: int, epoch: int) -> torch.Tensor:
        key = (stage_index, epoch)
        if key not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator(device=self.device)
            g.manual_seed(derive_seed(self.seed, self.name, stage_index, epoch))
            self._perms[key] = torch.randperm(self.n, generator=g, device=self.device)
        return self._perms[key]

    def indices(self, stage_index: int, step: int, batch: int, rank: int, world: int) -> torch.Tensor:
        """``(batch,)`` int64 indices for ``step`` (0-based) of stage ``stage_index``."""
        start = (step * world + rank) * batch
        first, last = start // self.n, (start + batch - 1) // self.n
        parts = []
        for epoch in range(first, last + 1):  # usually one epoch, two at an epoch boundary
            lo = max(start, epoch * self.n) - epoch * self.n
            hi = min(start + batch, (epoch + 1) * self.n) - epoch * self.n
            parts.append(self._perm(stage_index, epoch)[lo:hi])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class Feeder:
    """Draws :class:`Batch` objects on ``device`` from resident uint8 face sets.

    Batches are a pure function of ``(seed, stage_index, step, rank, world_size)``, so a resumed
    run sees exactly the batches an uninterrupted run sees. The uint8 tensors live on the
    device when they fit (a quarter of free GPU memory), otherwise in pinned host memory.
    """

    def __init__(self, hr: FaceSet | None, lr: FaceSet | None, device: torch.device | str,
                 seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 hflip: bool = False) -> None:
        self.device = torch.device(device)
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.seed, self.hflip = seed, hflip
        self.hr = self._place(hr.images) if hr is not None else None
        self.identity = hr.identity.to(self.hr.device) if hr is not None else None
        self.lr = self._place(lr.images) if lr is not None else None
        # stages that need identities draw from the labelled HR faces only, so that every batch
        # (on every rank) has a label for each face and no step is ever skipped
        self.labelled = (torch.nonzero(self.identity >= 0).flatten()
                         if self.identity is not None else None)
        self._streams = {name: _Stream(len(t), seed, name, t.device)
                         for name, t in (("hr", self.hr), ("lr", self.lr), ("hr_labelled", self.labelled))
                         if t is not None and len(t)}

    def _place(self, t: torch.Tensor) -> torch.Tensor:
        if _fits_on(self.device, t.numel() * t.element_size()):
            return t.to(self.device)
        log.info("keeping %s faces in pinned host memory (too large for the GPU)", tuple(t.shape))
        return t.pin_memory()

    def _take(self, data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return data[idx].to(self.device, non_blocking=True)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _image(self, u8: torch.Tensor, stream: str, stage_index: int, step: int) -> torch.Tensor:
        """uint8 faces -> float in [0,1]; with ``hflip``, each mirrored with probability 1/2
        (a pure function of seed, stream, stage, step and rank, like the indices)."""
        x = u8.float().div_(255.0)
        if self.hflip:
            g = torch.Generator(device=x.device)
            g.manual_seed(derive_seed(self.seed, "hflip", stream, stage_index, step, self.rank))
            flip = torch.rand(len(x), generator=g, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return self._layout(x)

    def provides(self) -> set[str]:
        """The Batch streams this feeder can fill (``identity`` only if some HR face has one)."""
        out = {"hr", "lr_artificial"} if self.hr is not None else set()
        out |= {"identity"} if "hr_labelled" in self._streams else set()
        return out | ({"lr_genuine"} if self.lr is not None else set())

    def batch(self, stage: Stage, stage_index: int, step: int) -> Batch:
        """The batch of ``step`` (0-based) of ``stage``: only the streams in ``stage.needs``."""
        needs, b = set(stage.needs), stage.batch_size
        missing = needs - self.provides()
        if missing == {"identity"}:
            raise DatasetError(f"stage {stage.name!r} needs identity labels but no HR face has one")
        if missing:
            raise DatasetError(f"stage {stage.name!r} needs {sorted(missing)} but no such faces were loaded")
        out = Batch()
        if needs & {"hr", "identity", "lr_artificial"}:
            stream = "hr_labelled" if "identity" in needs else "hr"
            idx = self._streams[stream].indices(stage_index, step, b, self.rank, self.world_size)
            if stream == "hr_labelled":
                idx = self.labelled[idx]
            hr = self._image(self._take(self.hr, idx), "hr", stage_index, step)  # DS pairs follow
            if "hr" in needs:
                out.hr = hr
            if "identity" in needs:
                out.identity = self._take(self.identity, idx)
            if "lr_artificial" in needs:
                # quantised like every stored LR image and Table 3's inputs: an unquantised x_a
                # (38 % of the sample's faces had pixels outside [0,1]) tells D "artificial" by itself
                out.lr_artificial = self._layout(to_uint8(downsample(hr)).float().div_(255.0))
        if "lr_genuine" in needs:
            idx = self._streams["lr"].indices(stage_index, step, b, self.rank, self.world_size)
            out.lr_genuine = self._image(self._take(self.lr, idx), "lr", stage_index, step)
        return out
