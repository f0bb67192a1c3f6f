"""MTCNN's 5 facial landmarks on HR face crops, detected once per face set and cached.

No dataset manifest stores landmarks, so they are found on the decoded HR faces themselves
(:class:`~lrfacebench.data.faces.FaceSet` ``(N,3,S,S)`` uint8): each face is padded by
``S/2`` of mid-grey on every side (MTCNN misses faces that fill the whole image) and searched
at x2 with :class:`~lrfacebench.data.detect.MTCNNDetector`; the best detection whose box centre
lies within ``S/4`` of the crop centre gives the face's landmarks. On the embedded sample's
228 HR faces this finds 223 (7 s on one CPU thread).

Landmarks are ``(N,5,2)`` float32 ``(x, y)`` in face pixels (pixel ``i`` covers ``[i, i+1)``), in
MTCNN's order: left eye, right eye, nose, left and right mouth corner (left = image left); a face
without a detection has a row of NaN. They are cached as ``.npy`` under
``$LRFB_CACHE_DIR/landmarks`` keyed by the images' bytes and the detection settings.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from lrfacebench import io
from lrfacebench.data.detect import DetectorConfig, MTCNNDetector
from lrfacebench.data.faces import FaceSet
from lrfacebench.errors import DatasetError

log = logging.getLogger(__name__)

N_LANDMARKS = 5
MIRROR = (1, 0, 2, 4, 3)  # landmark order after a horizontal flip (left <-> right)
DETECTOR = DetectorConfig(scales=(2.0,), thresholds=(0.6, 0.7, 0.7), min_score=0.5, device="cpu")
VERSION = "mtcnn-pad-grey-v1"  # part of the cache key: change it when the procedure changes


def detect_landmarks(images: torch.Tensor, detector: MTCNNDetector | None = None) -> torch.Tensor:
    """``(N,3,S,S)`` uint8 faces -> ``(N,5,2)`` float32 landmarks in face pixels, NaN rows where
    no face is found near the crop centre."""
    n, _, size, _ = images.shape
    pad = size // 2
    detector = detector or MTCNNDetector(DETECTOR)
    canvases = [np.ascontiguousarray(cv2.copyMakeBorder(im, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                                        value=(127, 127, 127)))
                for im in images.permute(0, 2, 3, 1).numpy()]
    out = torch.full((n, N_LANDMARKS, 2), float("nan"))
    centre = pad + size / 2
    for i, found in enumerate(detector.detect_many(canvases)):
        near = [d for d in found if d.landmarks is not None
                and abs((d.box[0] + d.box[2]) / 2 - centre) < size / 4
                and abs((d.box[1] + d.box[3]) / 2 - centre) < size / 4]
        if near:  # detections come best score first
            out[i] = torch.from_numpy(np.asarray(near[0].landmarks, dtype=np.float32) - pad)
    return out


def with_landmarks(faces: FaceSet, cache: Path | None = None) -> FaceSet:
    """``faces`` with :attr:`FaceSet.landmarks` filled (from the cache when present).

    Raises :class:`DatasetError` when no face has landmarks (a method asked for them)."""
    key = io.sha256_json({"images": io.sha256_bytes(faces.images.numpy().tobytes()),
                          "shape": list(faces.images.shape), "version": VERSION,
                          "detector": dataclasses.asdict(DETECTOR)})
    path = Path(cache or io.cache_dir("landmarks")) / f"{key}.npy"
    if path.is_file():
        points = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        log.info("detecting landmarks on %d %s faces (MTCNN, once; cached in %s)", len(faces),
                 faces.kind, path.parent)
        points = detect_landmarks(faces.images)
        with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, points.numpy(), allow_pickle=False)
    found = int(torch.isfinite(points).all(2).all(1).sum())
    if not found:
        raise DatasetError(f"{faces.info.get('source', faces.kind)}: MTCNN found landmarks on none of the "
                           f"{len(faces)} {faces.kind} faces; train without the landmark prior "
                           "(-o prior_loss=none)", "hr")
    if found < len(faces):
        log.warning("landmarks found on %d of %d %s faces; stages that need them use only those",
                    found, len(faces), faces.kind)
    return dataclasses.replace(faces, landmarks=points)


def mirror_landmarks(points: torch.Tensor, flip: torch.Tensor, width: int) -> torch.Tensor:
    """Landmarks ``(B,5,2)`` of faces ``width`` pixels wide, those where ``flip`` ``(B,)`` bool is
    set mirrored like ``image.flip(3)``: ``x -> width - x``, left and right swapped."""
    mirrored = points[:, list(MIRROR)].clone()
    mirrored[..., 0] = width - mirrored[..., 0]
    return torch.where(flip[:, None, None], mirrored, points)
