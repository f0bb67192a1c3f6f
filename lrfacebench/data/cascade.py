"""MTCNN's three stages over one image pyramid, batched: the default search of
:class:`lrfacebench.data.detect.MTCNNDetector` (``detector.schedule = "pyramid"``).

facenet-pytorch's ``detect_face`` runs one pyramid per input image, resamples every level from
that input with ``interpolate``, and cuts each R-Net/O-Net candidate in a Python loop of
``interpolate`` calls; run on x1, x2 and x4 up-sampled copies of a photo, those loops, the
overlapping pyramids and a full-resolution P-Net were the build's time. Here:

* one pyramid per region (a whole photo or a ROI): level ``k`` has scale
  ``top * 12 / min_face_size * factor**k`` (level px per original px) and is resampled once,
  straight from the original pixels (bicubic above scale 1, area below); the x2 and x1
  pyramids, whose levels the x4 one already has (``factor**2`` = 0.503), are not searched again;
* P-Net runs channels-last on tiles of at most ``tile`` x ``tile`` level pixels that start at even
  offsets and overlap by 10 px: P-Net is fully convolutional with stride 2 and a 12 px window, so
  the tiles give exactly the windows of the whole level, and its memory is bounded by the tile;
* R-Net and O-Net see the candidates of every level, tile and region of an image in one batch;
  their 24 and 48 px inputs are cut by ``torchvision.ops.roi_align`` (bilinear, averaged over
  each output bin when shrinking, zero outside as in the original MTCNN) from the region
  up-sampled once, bicubic, by ``top`` (as facenet-pytorch cut them from the x4 copy: cut from
  the original pixels instead, recall at 9 px on the sample's dlib photos fell from 0.88 to 0.74);
* NMS is ``torchvision.ops.batched_nms``; O-Net's "intersection over the smaller box" NMS, which
  torchvision lacks, is vectorised here (:func:`nms_min`).

Images are RGB ``uint8`` ``(H,W,3)``. Boxes are float ``(K,4)`` ``x1, y1, x2, y2`` in continuous
original-pixel coordinates (pixel ``i`` covers ``[i, i+1)``); landmarks ``(K,5,2)`` ``(x, y)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, roi_align

WINDOW, STRIDE = 12, 2  # P-Net's window and output stride, in level pixels
TILE_OVERLAP = WINDOW - STRIDE  # tiles overlapping by this much see every window exactly once
_CHUNK = 256  # R-Net/O-Net inputs per forward call: bounds their memory; 3x faster than 2048 here


@dataclass(frozen=True)
class Region:
    """Where to search: ``box`` (integer x1, y1, x2, y2, original pixels) of an image, with a
    pyramid of level ``scales`` (level px per original px, largest first); R-Net and O-Net crop
    from the box up-sampled by ``top``."""

    box: tuple[int, int, int, int]
    scales: tuple[float, ...]
    top: float


@dataclass
class Candidates:
    """Faces of a stage: ``boxes`` (K,4), ``scores`` (K,) in [0,1], ``region`` (K,) int64 index
    into the searched regions, ``points`` (K,5,2) landmarks (after O-Net only)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    region: torch.Tensor
    points: torch.Tensor | None = None

    def take(self, keep: torch.Tensor) -> Candidates:
        return Candidates(self.boxes[keep], self.scores[keep], self.region[keep],
                          None if self.points is None else self.points[keep])


def level_scales(width: int, height: int, top: float, min_face_size: float, factor: float,
                 smallest_face: float = 0.0, largest_face: float = math.inf,
                 margins: tuple[int, int] = (0, 2)) -> tuple[float, ...]:
    """Scales of the pyramid searched in a ``width`` x ``height`` region, largest first.

    Level ``k`` is ``top * 12 / min_face_size * factor**k`` (facenet-pytorch's pyramid of an
    image up-sampled by ``top``), down to the last level whose shorter side is >= 12 px. A level
    ``s`` finds faces of about ``12/s`` to ``12/(s*factor)`` original px. Levels whose faces all
    lie outside [``smallest_face``, ``largest_face``] are skipped, except ``margins`` = (below,
    above) levels on either side of that window, for box regression moving a face across a
    level boundary: a level is kept while ``12 / (s * factor**(1 + below)) > smallest_face`` and
    ``12 * factor**above / s <= largest_face``. With the default (0, 2) and faces of 6-16 px,
    x4 and x2.84 (faces under 6 px) and the levels from x0.36 (faces over 33 px) down are skipped.
    """
    (below, above), out, s = margins, [], top * WINDOW / min_face_size
    while min(width, height) * s >= WINDOW:
        if WINDOW / (s * factor ** (1 + below)) > smallest_face and WINDOW * factor ** above / s <= largest_face:
            out.append(s)
        s *= factor
    return tuple(out)


def pnet_flops(pnet: nn.Module, height: int, width: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of P-Net's convolutions on one ``height`` x ``width`` input,
    counted from its layer shapes (3x3 convs without padding, 2x2 ceil-mode pooling after conv1,
    then two 1x1 heads); PReLU, pooling and softmax are not counted."""
    def conv(c: nn.Conv2d, h: int, w: int) -> tuple[int, int, int]:
        kh, kw = c.kernel_size
        oh, ow = h - kh + 1, w - kw + 1
        return 2 * oh * ow * c.out_channels * c.in_channels * kh * kw, oh, ow

    f1, h, w = conv(pnet.conv1, height, width)
    h, w = math.ceil(h / 2), math.ceil(w / 2)
    f2, h, w = conv(pnet.conv2, h, w)
    f3, h, w = conv(pnet.conv3, h, w)
    f4 = conv(pnet.conv4_1, h, w)[0] + conv(pnet.conv4_2, h, w)[0]
    return f1 + f2 + f3 + f4


def level_size(region: tuple[int, int, int, int], scale: float) -> tuple[int, int]:
    """(width, height) of a pyramid level of ``region`` at ``scale``."""
    x1, y1, x2, y2 = region
    return max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))


def tile_starts(length: int, tile: int) -> list[int]:
    """Even start offsets of tiles of ``tile`` (even) px, overlapping by :data:`TILE_OVERLAP`, that
    cover every 12 px window of a ``length`` px axis (the last tile may be shorter)."""
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + tile - TILE_OVERLAP)
    if len(starts) > 1 and length - starts[-1] < WINDOW:
        starts.pop()  # no window starts there that the previous tile lacks
    return starts


def _resample(image: np.ndarray, region: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """``region`` of uint8 ``image`` resized to ``size`` (w, h): bicubic up, area down (uint8)."""
    x1, y1, x2, y2 = region
    crop = image[y1:y2, x1:x2]
    if size == (x2 - x1, y2 - y1):
        return crop
    up = size[0] > x2 - x1
    return cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """MTCNN's input scaling of [0,255] pixels to about [-1,1], in place on float ``x``."""
    return x.sub_(127.5).mul_(0.0078125)


class Cascade:
    """P-Net, R-Net and O-Net of facenet-pytorch's ``MTCNN`` run over regions' pyramids.

    ``thresholds``: P-, R-, O-Net probability thresholds; ``tile``: the largest P-Net input side
    (even, level px). The networks are converted to channels-last memory in place.
    """

    def __init__(self, pnet: nn.Module, rnet: nn.Module, onet: nn.Module,
                 thresholds: Sequence[float], tile: int):
        # channels-last: P-Net 2x, R-Net 4x, O-Net 2.4x faster than NCHW on the dev machine's CPU
        self.pnet, self.rnet, self.onet = (n.to(memory_format=torch.channels_last) for n in (pnet, rnet, onet))
        self.thresholds = tuple(thresholds)
        self.tile = tile

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, regions: Sequence[Region]) -> Candidates:
        """Faces in ``regions`` of ``image``: boxes, O-Net scores, region indices, landmarks."""
        found = self.propose(image, regions)
        sources = [_CropSource(image, r) for r in regions]
        found = self.refine(sources, found)
        return self.output(sources, found)

    # -- stage 1 -----------------------------------------------------------------------------
    def propose(self, image: np.ndarray, regions: Sequence[Region]) -> Candidates:
        """P-Net windows over each region's pyramid: NMS 0.5 per level, 0.7 per region, then
        P-Net's box regression and squaring (facenet-pytorch's first stage)."""
        parts = []
        for i, r in enumerate(regions):
            levels = [self._level(image, r.box, s) for s in r.scales]
            levels = [c for c in levels if len(c[0])]
            if not levels:
                continue
            boxes = torch.cat([c[0] for c in levels])
            scores = torch.cat([c[1] for c in levels])
            reg = torch.cat([c[2] for c in levels])
            keep = batched_nms(boxes, scores, torch.zeros(len(boxes), dtype=torch.int64), 0.7)
            boxes = _square(_regress(boxes[keep], reg[keep]))
            parts.append(Candidates(boxes, scores[keep], torch.full((len(keep),), i, dtype=torch.int64)))
        return _concat(parts)

    def _level(self, image: np.ndarray, region: tuple[int, int, int, int], scale: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P-Net on one level, tile by tile: window boxes (original px), scores, regression (K,4);
        NMS 0.5 within the level."""
        lw, lh = level_size(region, scale)
        level = _resample(image, region, (lw, lh))
        sx, sy = lw / (region[2] - region[0]), lh / (region[3] - region[1])
        boxes, scores, regs = [], [], []
        for ty in tile_starts(lh, self.tile):
            for tx in tile_starts(lw, self.tile):
                part = np.ascontiguousarray(level[ty:ty + self.tile, tx:tx + self.tile])
                if min(part.shape[:2]) < WINDOW:
                    continue
                # dense HWC uint8 -> an NCHW view with channels-last strides, as the P-Net's weights
                x = _normalise(torch.from_numpy(part).permute(2, 0, 1)[None].float())
                reg, prob = self.pnet(x)
                p = prob[0, 1]
                hit = p >= self.thresholds[0]
                yx = hit.nonzero()
                if not len(yx):
                    continue
                gx = (yx[:, 1] * STRIDE + tx).double()
                gy = (yx[:, 0] * STRIDE + ty).double()
                boxes.append(torch.stack([gx / sx + region[0], gy / sy + region[1],
                                          (gx + WINDOW) / sx + region[0], (gy + WINDOW) / sy + region[1]], 1))
                scores.append(p[hit].double())
                regs.append(reg[0][:, hit].T.double())
        if not boxes:
            empty = torch.zeros((0, 4), dtype=torch.float64)
            return empty, torch.zeros(0, dtype=torch.float64), empty
        b, s, g = torch.cat(boxes), torch.cat(scores), torch.cat(regs)
        keep = batched_nms(b, s, torch.zeros(len(b), dtype=torch.int64), 0.5)
        return b[keep], s[keep], g[keep]

    # -- stages 2 and 3 ----------------------------------------------------------------------
    def refine(self, sources: Sequence[_CropSource], c: Candidates) -> Candidates:
        """R-Net on 24 px crops of all candidates: score > threshold, NMS 0.7 per region, box
        regression and squaring."""
        if not len(c.boxes):
            return c
        reg, prob = _batched(self.rnet, _crops(sources, c.region, c.boxes, 24))
        keep = (prob[:, 1] > self.thresholds[1]).nonzero()[:, 0]
        c = Candidates(c.boxes[keep], prob[keep, 1].double(), c.region[keep])
        reg = reg[keep].double()
        keep = batched_nms(c.boxes, c.scores, c.region, 0.7)
        return Candidates(_square(_regress(c.boxes[keep], reg[keep])), c.scores[keep], c.region[keep])

    def output(self, sources: Sequence[_CropSource], c: Candidates) -> Candidates:
        """O-Net on 48 px crops: score > threshold, landmarks, box regression, then NMS 0.7 of
        intersection over the smaller box per region."""
        if not len(c.boxes):
            return Candidates(c.boxes, c.scores, c.region, torch.zeros((0, 5, 2), dtype=torch.float64))
        reg, marks, prob = _batched(self.onet, _crops(sources, c.region, c.boxes, 48))
        keep = (prob[:, 1] > self.thresholds[2]).nonzero()[:, 0]
        b, reg, marks = c.boxes[keep], reg[keep].double(), marks[keep].double()
        wh = (b[:, 2:] - b[:, :2])[:, None, :]
        points = b[:, None, :2] + wh * torch.stack([marks[:, :5], marks[:, 5:]], 2)
        c = Candidates(_regress(b, reg), prob[keep, 1].double(), c.region[keep], points)
        return c.take(nms_min(c.boxes, c.scores, c.region, 0.7))


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """MTCNN's box regression: each side moves by its offset times the box width or height."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + reg * wh


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares of side max(w, h) about the same centre (facenet's ``rerec``)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], 1)


class _CropSource:
    """A region up-sampled by its ``top`` scale (bicubic), (1,3,h,w) float [0,255], and the map of
    original pixels onto it."""

    def __init__(self, image: np.ndarray, r: Region):
        w, h = level_size(r.box, r.top)
        # cv2.split + numpy's conversion: 3x faster than torch's permute, float and contiguous
        self.pixels = torch.from_numpy(np.stack(cv2.split(_resample(image, r.box, (w, h)))).astype(np.float32))[None]
        x1, y1, x2, y2 = r.box
        self.origin = torch.tensor([x1, y1, x1, y1], dtype=torch.float64)
        self.scale = torch.tensor([w / (x2 - x1), h / (y2 - y1)] * 2, dtype=torch.float64)


def _crops(sources: Sequence[_CropSource], region: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` x ``size`` crops (N,3,size,size) of ``boxes`` (original px), each from the source
    of its ``region``, normalised for MTCNN; zero (before normalising) outside the region."""
    out = torch.empty((len(boxes), 3, size, size))
    for i in region.unique().tolist():
        idx = (region == i).nonzero()[:, 0]
        src = sources[i]
        local = ((boxes[idx] - src.origin) * src.scale).float()
        out[idx] = roi_align(src.pixels, [local], size, 1.0, 2, aligned=True)
    return _normalise(out).contiguous(memory_format=torch.channels_last)


def _batched(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``net`` on ``x`` in chunks of :data:`_CHUNK`, outputs concatenated."""
    outs = [net(x[i:i + _CHUNK]) for i in range(0, len(x), _CHUNK)]
    return tuple(torch.cat(v) for v in zip(*outs))


def _concat(parts: list[Candidates]) -> Candidates:
    if not parts:
        return Candidates(torch.zeros((0, 4), dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
                          torch.zeros(0, dtype=torch.int64))
    return Candidates(torch.cat([p.boxes for p in parts]), torch.cat([p.scores for p in parts]),
                      torch.cat([p.region for p in parts]))


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with overlap = intersection / area of the smaller box (MTCNN's "Min" mode, which
    ``torchvision.ops`` lacks): indices kept, best score first; boxes of different ``groups``
    never suppress each other. ``boxes`` (K,4), ``scores`` (K,), ``groups`` (K,) int."""
    order = torch.argsort(scores, descending=True, stable=True)
    b, g = boxes[order], groups[order]
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    smaller = torch.minimum(area[:, None], area[None, :]).clamp(min=1e-12)
    suppress = ((inter / smaller > threshold) & (g[:, None] == g[None, :])).numpy()
    removed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not removed[i]:
            keep.append(i)
            removed |= suppress[i]
    return order[torch.tensor(keep, dtype=torch.int64)]
