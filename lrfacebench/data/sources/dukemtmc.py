"""DukeMTMC (Ristani et al., ECCV-W 2016) -> LR-DukeMTMC.

Layout (devkit): frames ``<root>/frames/camera{c}/{frame:06d}.jpg`` (1-based frame numbers)
and ``<root>/ground_truth/trainval.mat`` (MATLAB v7.3 = HDF5, read with h5py; an older
v5 .mat is read with scipy), matrix ``trainData`` with one row per person box:
``camera, ID, frame, left, top, width, height, worldX, worldY, feetX, feetY``.

Frames are sampled at a stride (people move slowly); faces are searched only in the head
region of each person box (an ROI given as fractions of the box) and take the identity
``dukemtmc:<ID>`` of the person box they overlap best.

The dataset's creators withdrew it in 2019 over privacy concerns: read it only if you hold
it lawfully. The ``video`` and ``folder`` sources handle any other surveillance footage.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrfacebench.data.sources.base import (Annot, Box, Item, LayoutError, Problem, Scan, check_box, rel,
                                           xywh_box)

KIND = "genuine"
GROUND_TRUTH = "ground_truth/trainval.mat"
COLUMNS = ("camera", "ID", "frame", "left", "top", "width", "height", "worldX", "worldY", "feetX", "feetY")


@dataclass
class Options:
    cameras: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    stride: int = 60  # keep frames with (frame - 1) % stride == 0: one frame per second at 60 fps
    fps: float = 59.940059  # DukeMTMC cameras: 1080p at 59.94 fps (time_s = (frame - 1) / fps)
    # head region searched for a face, as fractions (x1, y1, x2, y2) of the person box
    head_region: tuple[float, float, float, float] = (-0.1, -0.05, 1.1, 0.3)
    split: str = "test"  # the paper uses all of LR-DukeMTMC as a test set


def read_matrix(path: Path) -> np.ndarray:
    """``trainData`` as an ``(N, 11)`` float64 array (MATLAB v7.3 stores it transposed)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            if "trainData" not in f:
                raise LayoutError(f"{path}: no 'trainData' matrix (found {sorted(f)})")
            data = np.asarray(f["trainData"][()], dtype=np.float64)
    except OSError:  # not HDF5: a MATLAB v5 file
        import scipy.io

        try:
            mat = scipy.io.loadmat(path)
        except Exception as e:  # scipy raises several types for non-MAT files
            raise LayoutError(f"{path}: neither a MATLAB v7.3 (HDF5) nor a v5 .mat file ({e})") from None
        if "trainData" not in mat:
            raise LayoutError(f"{path}: no 'trainData' matrix") from None
        data = np.asarray(mat["trainData"], dtype=np.float64)
    if data.ndim != 2 or len(COLUMNS) not in data.shape:
        raise LayoutError(f"{path}: trainData has shape {data.shape}, expected (N, {len(COLUMNS)})")
    if data.shape[1] != len(COLUMNS):
        data = data.T
    return data


def scan(root: Path, opts: Options) -> Scan:
    gt = root / GROUND_TRUTH
    if not gt.is_file():
        raise LayoutError(f"DukeMTMC: expected {GROUND_TRUTH} under {root} (devkit layout: "
                          "frames/camera{c}/{frame:06d}.jpg + ground_truth/trainval.mat)")
    if not (root / "frames").is_dir():
        hint = (" Found videos/: extract frames with the DukeMTMC devkit, or build from the videos "
                "with the `video` source." if (root / "videos").is_dir() else "")
        raise LayoutError(f"DukeMTMC: expected extracted frames in {root / 'frames'}.{hint}")
    if opts.stride < 1:
        raise ValueError(f"stride must be >= 1, got {opts.stride}")
    out = Scan(files=[gt])
    boxes: dict[tuple[int, int], list[Annot]] = defaultdict(list)
    for i, row in enumerate(read_matrix(gt)):
        where = f"row {i + 1}"
        if not np.all(np.isfinite(row[:7])):
            out.problems.append(Problem(GROUND_TRUTH, where, "non-finite values"))
            continue
        cam, pid, frame = int(row[0]), int(row[1]), int(row[2])
        if cam not in opts.cameras or frame < 1 or (frame - 1) % opts.stride:
            continue
        box = xywh_box(*row[3:7])
        if (why := check_box(box)) is not None:
            out.problems.append(Problem(GROUND_TRUTH, where, why))
            continue
        boxes[(cam, frame)].append(Annot(box=box, roi=_head(box, opts.head_region),
                                         identity=f"dukemtmc:{pid}", ref=f"{GROUND_TRUTH}:{where}"))
    for (cam, frame), annots in sorted(boxes.items()):
        path = root / "frames" / f"camera{cam}" / f"{frame:06d}.jpg"
        if not path.is_file():
            out.problems.append(Problem(rel(path, root), "", "missing frame file"))
            continue
        time_s = round((frame - 1) / opts.fps, 3) if opts.fps > 0 else None
        out.items.append(Item(source=rel(path, root), mode="roi", frame=frame, time_s=time_s,
                              split=opts.split, annots=tuple(annots)))
    return out


def _head(box: Box, frac: tuple[float, float, float, float]) -> Box:
    """The ROI given by fractions ``frac`` of a person ``box``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return (x1 + frac[0] * w, y1 + frac[1] * h, x1 + frac[2] * w, y1 + frac[3] * h)
