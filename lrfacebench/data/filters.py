"""Filters that turn detected faces into kept genuine-LR faces, each rejection with its reason.

Order (cheap first; the first failing filter names the reason): size (``too_large``,
``too_small``, ``crop_too_large``), ``cut_by_border``, ``low_score``, ``bad_landmarks``, junk (``junk_blank``,
``junk_dark``, ``junk_flat``), the second-stage face check ``not_a_face`` and finally
``near_duplicate`` among the survivors.

The face check replaces the paper's manual filtering: the native crop is re-scored by MTCNN's
R-Net (24x24) and O-Net (48x48) on the crop and its mirror image, up-sampled with
``degrade.imresize``; the mean of the four face probabilities must reach
``face_check_threshold``. Detection scores come from one O-Net pass on bicubic up-sampled
context, so the mirrored views and the independent R-Net add evidence a single pass lacks:
false detections on textures rarely look like a face both ways round to both nets.
Measured (``benchmarks/bench_detect.py``): at 0.75 it keeps 99.1 % of the sample's 433 genuine-LR
crops, rejects 99.9 % of 10-16 px background patches of real photos, and removes 16 of 17 false
detections but none of 201 true faces in the dlib photos shrunk to 8-16 px (the threshold was
chosen on these photos, so the last figure is not an independent test).

Crops are RGB ``uint8`` ``(h,w,3)`` arrays cut without resampling (:func:`crop_face`).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, RNet

from lrfacebench.data.detect import Box, Detection
from lrfacebench.degrade import imresize
from lrfacebench.weights import locate

REASONS: tuple[str, ...] = ("too_large", "too_small", "crop_too_large", "cut_by_border", "low_score", "bad_landmarks",
                            "junk_blank", "junk_dark", "junk_flat", "not_a_face", "near_duplicate")
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class Candidate:
    """A detected face before filtering.

    ``source``: input path relative to ``--root``; ``frame``: video frame or None;
    ``image_size``: (W, H) of the image; ``crop``: :func:`crop_face` of the box, RGB uint8.
    ``detection.score`` may be NaN and ``landmarks`` None for ground-truth boxes: those checks
    are then skipped.
    """

    source: str
    frame: int | None
    detection: Detection
    image_size: tuple[int, int]
    crop: np.ndarray


@dataclass
class FilterConfig:
    """Filter thresholds; the defaults are the dataset recipes' defaults.

    Sizes are the average of box width and height in original pixels. ``max_crop_side``: the
    largest side of the square crop (:func:`crop_rect`, the box's *larger* side) in original
    pixels. A crop larger than the LR size is shrunk to it by ``degrade.imresize``'s antialiased
    bicubic, the very operator DS that makes artificial LR, so such a "genuine" face is partly
    artificial; a training set of genuine LR sets it to the LR size (16) so that no face passes
    through DS (off by default: the paper's rule is the average size alone). ``border_margin``: the
    square crop must lie this many pixels inside the image. Junk, on the crop's luma (0-255):
    ``junk_blank_std`` (std below = blank), ``junk_dark_p99`` (99th percentile below = extremely
    dark), ``junk_flat_contrast`` (5-95 percentile spread below = flat). ``face_check_threshold``:
    minimum mean R-Net/O-Net face probability (see module doc). ``dedupe_threshold``: minimum
    shift-tolerant correlation of two crops for the later one to be a near duplicate.
    """

    max_avg_size: float = 16.0
    min_avg_size: float = 6.0
    max_crop_side: float = math.inf
    min_score: float = 0.7
    landmarks: bool = True
    border_margin: float = 0.0
    junk_blank_std: float = 2.0
    junk_dark_p99: float = 25.0
    junk_flat_contrast: float = 12.0
    face_check: bool = True
    face_check_threshold: float = 0.75
    dedupe: bool = True
    dedupe_threshold: float = 0.97


def crop_rect(box: Box) -> tuple[int, int, int, int]:
    """Integer square (x0, y0, x1, y1) centred on ``box`` with side = round(max box side), >= 1."""
    x1, y1, x2, y2 = box
    side = max(1, math.floor(max(x2 - x1, y2 - y1) + 0.5))  # round half up
    x0, y0 = math.floor((x1 + x2 - side) / 2 + 0.5), math.floor((y1 + y2 - side) / 2 + 0.5)
    return x0, y0, x0 + side, y0 + side


def crop_face(image: np.ndarray, box: Box) -> np.ndarray:
    """Native-resolution square crop of ``box`` from RGB ``image`` (H,W,3): side = max box side,
    centred on the box, clipped to the image (so smaller than square at a border), no resampling.

    Raises ``ValueError`` when the square does not overlap the image.
    """
    x0, y0, x1, y1 = crop_rect(box)
    H, W = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {box} lies outside the {W}x{H} image")
    return image[cy0:cy1, cx0:cx1].copy()


def padded_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The square of :func:`crop_rect` of ``box`` at native resolution; parts outside the image are
    filled by edge replication (paired sets need square HR crops even at the border)."""
    x0, y0, x1, y1 = crop_rect(box)
    H, W = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    part = image[cy0:cy1, cx0:cx1]
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1), (0, 0))
    return np.pad(part, pad, mode="edge") if any(p for q in pad for p in q) else part.copy()


def make_candidates(image: np.ndarray, detections: Sequence[Detection], source: str = "",
                    frame: int | None = None) -> list[Candidate]:
    """Candidates for ``detections`` in RGB ``image`` (crops by :func:`crop_face`)."""
    size = (image.shape[1], image.shape[0])
    return [Candidate(source, frame, d, size, crop_face(image, d.box)) for d in detections]


def landmarks_plausible(det: Detection, grow: float = 0.25) -> bool:
    """5-point layout check: all points inside the box grown by ``grow`` of its size, eyes above
    the mouth corners, left eye left of the right eye and left mouth corner left of the right one."""
    if det.landmarks is None:
        return True
    pts = np.asarray(det.landmarks, dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        return False
    x1, y1, x2, y2 = det.box
    gw, gh = grow * (x2 - x1), grow * (y2 - y1)
    inside = ((pts[:, 0] >= x1 - gw) & (pts[:, 0] <= x2 + gw) & (pts[:, 1] >= y1 - gh) & (pts[:, 1] <= y2 + gh)).all()
    le, re, _, ml, mr = pts
    return bool(inside and (le[1] + re[1]) < (ml[1] + mr[1]) and le[0] < re[0] and ml[0] < mr[0])


def junk_reason(crop: np.ndarray, cfg: FilterConfig) -> str | None:
    """``junk_blank`` / ``junk_dark`` / ``junk_flat`` for a crop that carries no face signal, else None."""
    y = crop.reshape(-1, 3).astype(np.float64) @ _LUMA
    if y.size == 0 or y.std() < cfg.junk_blank_std:
        return "junk_blank"
    p5, p95, p99 = np.percentile(y, (5, 95, 99))
    if p99 < cfg.junk_dark_p99:
        return "junk_dark"
    if p95 - p5 < cfg.junk_flat_contrast:
        return "junk_flat"
    return None


@functools.lru_cache(maxsize=1)
def _nets():
    """MTCNN's R-Net and O-Net (facenet-pytorch bundled weights, sha256-checked), eval mode, CPU."""
    locate("mtcnn-rnet")
    locate("mtcnn-onet")
    return RNet(pretrained=True).eval(), ONet(pretrained=True).eval()


def face_probability(crops: Sequence[np.ndarray]) -> np.ndarray:
    """Second-stage face check: (N,) float in [0,1], the mean face probability of R-Net (24x24)
    and O-Net (48x48) on each crop and its mirror image (crops up-sampled by ``degrade.imresize``)."""
    if len(crops) == 0:
        return np.zeros(0)
    rnet, onet = _nets()
    out = np.zeros(len(crops))
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(crops):
        by_shape.setdefault(c.shape, []).append(i)
    with torch.no_grad():
        for idx in by_shape.values():
            x = torch.from_numpy(np.stack([crops[i] for i in idx])).permute(0, 3, 1, 2).double()
            probs = []
            for net, size in ((rnet, 24), (onet, 48)):
                v = imresize(x, (size, size)).clamp(0, 255).float()
                v = (torch.cat([v, v.flip(-1)]) - 127.5) * 0.0078125  # MTCNN's input scaling
                p = net(v)[-1][:, 1].double()
                probs += [p[:len(idx)], p[len(idx):]]
            out[idx] = torch.stack(probs).mean(0).numpy()
    return out


def filter_candidates(cands: Sequence[Candidate], cfg: FilterConfig) -> list[str | None]:
    """Per candidate: None when kept, else the first failing filter's code from :data:`REASONS`.

    Near duplicates are searched among the candidates that passed every other filter, in the
    given order (pass all candidates of a video or shard together to catch repeats across frames).
    """
    reasons: list[str | None] = []
    for c in cands:
        reasons.append(_cheap_reason(c, cfg))
    if cfg.face_check:
        todo = [i for i, r in enumerate(reasons) if r is None]
        probs = face_probability([cands[i].crop for i in todo])
        for i, p in zip(todo, probs):
            if p < cfg.face_check_threshold:
                reasons[i] = "not_a_face"
    if cfg.dedupe:
        todo = [i for i, r in enumerate(reasons) if r is None]
        for k, dup in enumerate(near_duplicates([cands[i].crop for i in todo], cfg)):
            if dup is not None:
                reasons[todo[k]] = "near_duplicate"
    return reasons


def quality_filter(cfg: FilterConfig) -> Callable[[np.ndarray, list[Detection]], list[Detection]]:
    """(image, detections) -> the detections ``cfg`` accepts as faces: every filter except the size
    window and near duplicates, which define the dataset rather than judge faces. This is the stage
    measured by ``detect.evaluate_on_annotated(..., verify=quality_filter(cfg))``."""
    judge = dataclasses.replace(cfg, max_avg_size=math.inf, min_avg_size=0.0, dedupe=False)

    def keep(image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        reasons = filter_candidates(make_candidates(image, detections), judge)
        return [d for d, r in zip(detections, reasons) if r is None]

    return keep


def _cheap_reason(c: Candidate, cfg: FilterConfig) -> str | None:
    d = c.detection
    size = d.avg_size
    if size > cfg.max_avg_size:
        return "too_large"
    if size < cfg.min_avg_size:
        return "too_small"
    W, H = c.image_size
    x0, y0, x1, y1 = crop_rect(d.box)
    if x1 - x0 > cfg.max_crop_side:
        return "crop_too_large"
    m = cfg.border_margin
    if x0 < m or y0 < m or x1 > W - m or y1 > H - m:
        return "cut_by_border"
    if not math.isnan(d.score) and d.score < cfg.min_score:
        return "low_score"
    if cfg.landmarks and not landmarks_plausible(d):
        return "bad_landmarks"
    return junk_reason(c.crop, cfg)


# ---- near duplicates -------------------------------------------------------------------
_DUP_SIDE, _DUP_SHIFT, _DUP_COARSE, _DUP_PREFILTER = 16, 2, 4, 0.7


def _chw(crop: np.ndarray) -> torch.Tensor:
    """RGB uint8 (h,w,3) -> (1,3,h,w) float64 tensor in [0,255]."""
    return torch.from_numpy(np.require(crop, requirements=("C", "W"))).permute(2, 0, 1)[None].double()


def _ncc(v: torch.Tensor) -> torch.Tensor:
    """Each row of ``v`` centred and scaled to unit norm (normalised cross-correlation by dot product)."""
    v = v - v.mean(-1, keepdim=True)
    return v / (v.norm(dim=-1, keepdim=True) + 1e-8)


def near_duplicates(crops: Sequence[np.ndarray], cfg: FilterConfig) -> list[int | None]:
    """For each crop i: the index j < i of the most similar earlier crop it duplicates, or None.

    Both crops are resized to 16x16 RGB (``degrade.imresize``); the similarity is the largest
    normalised cross-correlation of one's central 12x12 window with the other's window shifted
    by up to 2 px either way (both directions), so box jitter across video frames, re-encoding and
    re-scaling of a repeated photo still match. A pair is a duplicate at >= ``dedupe_threshold``
    (0.97 by default: no pair of 433 different crowd faces of the sample exceeds 0.968). Pairs
    are pre-screened by a 4x4 thumbnail correlation >= 0.7. Deterministic (ties -> smaller j).
    """
    n = len(crops)
    if n < 2:
        return [None] * n
    S, R = _DUP_SIDE, _DUP_SHIFT
    small = torch.stack([imresize(_chw(c), (S, S))[0] for c in crops])  # (n,3,S,S)
    coarse = _ncc(imresize(small, (_DUP_COARSE, _DUP_COARSE)).reshape(n, -1))
    centre = _ncc(small[:, :, R:S - R, R:S - R].reshape(n, -1))  # (n,D)
    shifted = _ncc(torch.stack([small[:, :, R + dy:S - R + dy, R + dx:S - R + dx].reshape(n, -1)
                                for dy in range(-R, R + 1) for dx in range(-R, R + 1)], 1))  # (n,25,D)
    out: list[int | None] = [None] * n
    for i in range(1, n):
        cand = torch.nonzero(coarse[:i] @ coarse[i] >= _DUP_PREFILTER).flatten()
        if len(cand) == 0:
            continue
        fwd = torch.einsum("d,jsd->js", centre[i], shifted[cand]).amax(1)
        bwd = torch.einsum("jd,sd->js", centre[cand], shifted[i]).amax(1)
        sim = torch.maximum(fwd, bwd)
        best = int(torch.argmax(sim))  # first maximum = smallest j among ties
        if sim[best] >= cfg.dedupe_threshold:
            out[i] = int(cand[best])
    return out
