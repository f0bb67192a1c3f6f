"""Photos with annotated faces, and how well a detector finds those faces once the photos are
shrunk to a chosen face size (the acceptance check of the dataset builder, and its per-build
``detector_eval`` in ``stats.json``).

Images are RGB ``uint8`` ``(H,W,3)``; boxes ``(N,4)`` float64 ``x1, y1, x2, y2`` in pixels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lrfacebench.data.detect import Detection, Detector, box_iou
from lrfacebench.data.sources.base import read_dlib_xml
from lrfacebench.degrade import imresize
from lrfacebench.io import UnreadableImage, read_rgb


def load_dlib_annotated(folder: str | Path, xml_files: Sequence[str] = ("training.xml", "testing.xml")
                        ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Photos and face boxes of a dlib ``examples/faces``-style folder: (file names, RGB uint8
    images, (N,4) boxes), sorted by file name. Raises ``ValueError`` for a missing or malformed file."""
    folder = Path(folder)
    boxes: dict[str, np.ndarray] = {}
    for x in xml_files:
        boxes.update(read_dlib_xml(folder / x))
    names = sorted(boxes)
    photos = []
    for n in names:
        try:
            photos.append(read_rgb(folder / n))
        except UnreadableImage as e:
            raise ValueError(f"{folder / n}: annotated photo unreadable: {e}") from None
    return names, photos, [boxes[n] for n in names]


def shrink_to_face_size(image: np.ndarray, boxes: np.ndarray, target: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Shrink ``image`` so that its annotated faces average ``target`` px (mean of box w,h).

    Uses ``degrade.imresize`` (antialiased bicubic). Returns the uint8 image and the boxes
    scaled to it. Photos whose faces are already smaller are returned unchanged.
    """
    side = float(np.mean((boxes[:, 2] - boxes[:, 0] + boxes[:, 3] - boxes[:, 1]) / 2))
    s = target / side
    if s >= 1:
        return image, boxes.copy()
    H, W = image.shape[:2]
    h, w = max(1, round(H * s)), max(1, round(W * s))
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    small = imresize(x, (h, w))[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()
    return small, boxes * np.array([w / W, h / H, w / W, h / H])


def match_greedy(det: np.ndarray, gt: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by decreasing IoU: [(det index, gt index, IoU)] with IoU >= min_iou."""
    if len(det) == 0 or len(gt) == 0:
        return []
    iou = box_iou(det, gt)
    pairs = []
    used_d, used_g = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if i not in used_d and j not in used_g:
            used_d.add(i)
            used_g.add(j)
            pairs.append((i, j, float(iou[i, j])))
    return pairs


def evaluate_on_annotated(detector: Detector, photos: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                          target_size: float | None, min_iou: float = 0.4,
                          verify: Callable[[np.ndarray, list[Detection]], list[Detection]] | None = None
                          ) -> dict[str, Any]:
    """Recall/precision of ``detector`` on annotated photos shrunk so faces average ``target_size`` px.

    ``photos``: RGB uint8 images; ``boxes``: (N,4) annotated face boxes per photo;
    ``target_size=None`` evaluates at native size. ``verify`` (image, detections) -> kept detections
    applies later stages (e.g. the quality filters) before matching. A detection matches an
    annotated box when IoU >= ``min_iou`` (greedy, one-to-one); every unmatched detection is a
    false positive. Returns recall, precision, mean_iou (of matches), n_gt, n_det, n_tp after
    ``verify``, ``raw``: the same figures before it, ``seconds`` (detection time) and
    ``unmatched``: [(photo index, Detection, scaled image)] after ``verify``, for review.
    """
    raw, final = MatchTally(), MatchTally()
    seconds = 0.0
    for k, (img, gt) in enumerate(zip(photos, boxes)):
        if target_size is not None:
            img, gt = shrink_to_face_size(img, gt, target_size)
        t = time.perf_counter()
        dets = detector.detect(img)
        seconds += time.perf_counter() - t
        raw.add(k, img, dets, gt, min_iou)
        final.add(k, img, verify(img, dets) if verify is not None else dets, gt, min_iou)
    out = final.summary()
    out.update(seconds=seconds, raw=raw.summary(), unmatched=final.unmatched)
    return out


COUNTS = ("n_gt", "n_det", "n_tp")  # annotated faces, detections, detections matched to one


@dataclass
class MatchTally:
    """Running match counts of detections against annotated faces, photo by photo (greedy
    one-to-one matching, :func:`match_greedy`), with the IoU of every match and the unmatched
    detections (for review)."""

    n_gt: int = 0
    n_det: int = 0
    n_tp: int = 0

    def __post_init__(self) -> None:
        self.ious: list[float] = []
        self.unmatched: list[tuple[int, Detection, np.ndarray]] = []

    def add(self, k: int, img: np.ndarray, dets: Sequence[Detection], gt: np.ndarray, min_iou: float) -> None:
        """Match the detections ``dets`` in photo ``k`` (``img``) against its annotated boxes ``gt`` (N,4)."""
        pairs = match_greedy(np.array([d.box for d in dets]).reshape(-1, 4), gt, min_iou)
        matched = {i for i, _, _ in pairs}
        self.unmatched += [(k, d, img) for i, d in enumerate(dets) if i not in matched]
        self.ious += [v for _, _, v in pairs]
        self.n_gt, self.n_det, self.n_tp = self.n_gt + len(gt), self.n_det + len(dets), self.n_tp + len(pairs)

    def counts(self) -> dict[str, int]:
        return {"n_gt": self.n_gt, "n_det": self.n_det, "n_tp": self.n_tp}

    def summary(self) -> dict[str, Any]:
        return {"recall": self.n_tp / max(self.n_gt, 1),
                "precision": self.n_tp / self.n_det if self.n_det else 1.0,
                "mean_iou": float(np.mean(self.ious)) if self.ious else 0.0,
                "n_gt": self.n_gt, "n_det": self.n_det, "n_tp": self.n_tp}
