"""Tiny-face detection: a Detector interface and an MTCNN adapter that finds faces of 6-24 px.

MTCNN's P-Net window is 12 px, so at native scale it misses most faces of 16 px or less.
:class:`MTCNNDetector` therefore runs facenet-pytorch's ``MTCNN.detect`` on bicubic
up-sampled copies of the image (``DetectorConfig.scales``), or of regions of interest
(PIPA head boxes, DukeMTMC person boxes), maps boxes and landmarks back to original pixels
and merges the scales by non-maximum suppression. Large up-sampled images are cut into
equal overlapping tiles, which also lets inputs be batched (facenet-pytorch batches only
equal-size images).

Images are RGB ``uint8`` arrays ``(H,W,3)``; boxes are ``(x1, y1, x2, y2)`` floats in
original pixels; landmarks are ``(5,2)`` float ``(x, y)`` in original pixels in MTCNN's
order: left eye, right eye, nose, left and right mouth corner (left = image left).

:func:`evaluate_on_annotated` measures recall and precision on photos with annotated faces
shrunk to a chosen face size (the acceptance check of the dataset builder).
"""
from __future__ import annotations

import logging
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
_BATCH_PIXELS = 1 << 24  # at most this many up-sampled pixels per MTCNN call (bounds its memory)


@dataclass(frozen=True)
class Detection:
    """One detected face: ``box`` in original pixels, ``score`` in [0,1], ``landmarks`` (5,2) or None."""

    box: Box
    score: float
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def avg_size(self) -> float:
        """Average of box width and height (the paper's "average face size")."""
        return (self.width + self.height) / 2


@dataclass
class DetectorConfig:
    """Detector settings; the defaults are the dataset recipes' defaults.

    ``scales``: bicubic up-sampling factors of the image (or ROI); each factor runs one MTCNN
    pyramid and the results are merged by NMS (``nms_iou``). With ``min_face_size=12`` (the
    P-Net window, in up-sampled pixels) a scale ``s`` finds faces from ``12/s`` original pixels
    up, so (1, 2, 4) reaches 3 px faces while scale 1 sees large faces at native resolution.
    Detection time grows with the sum of squared scales; on the shrunk dlib photos (1, 2, 4)
    was as accurate as (1, 2, 3, 4) at 70 % of its time.
    ``thresholds``: P-, R-, O-Net probability thresholds (facenet-pytorch: 0.6, 0.7, 0.7). P-Net
    is raised to 0.8: on up-sampled photos it passes thousands of texture windows to R-Net, and
    0.8 roughly halves them (1.7x faster on crowd photos) at no measured recall cost; O-Net is
    lowered to 0.6 so that the ``low_score`` filter (0.7) records what it drops.
    ``min_score``: detections below it are dropped before merging. ``factor``: MTCNN pyramid
    step. ``roi_expand``: each ROI grows by this fraction of its width/height on every side
    before the search (context for MTCNN). ``tile``/``tile_overlap``: an up-sampled input larger
    than ``tile`` x ``tile`` pixels is cut into tiles of that size overlapping by ``tile_overlap``
    (up-sampled pixels); a tiled pass keeps only faces no larger than the overlap (larger ones
    come from a lower scale). ``batch_size``: equal-size inputs per MTCNN call.
    ``device``: ``auto``, ``cpu``, ``cuda[:N]``.
    """

    name: str = "mtcnn"
    scales: tuple[float, ...] = (1.0, 2.0, 4.0)
    min_face_size: float = 12.0
    thresholds: tuple[float, float, float] = (0.8, 0.7, 0.6)
    factor: float = 0.709
    min_score: float = 0.6
    nms_iou: float = 0.3
    roi_expand: float = 0.5
    tile: int = 2048
    tile_overlap: int = 256
    batch_size: int = 8
    device: str = "auto"


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray, rois: Sequence[Box] | None = None) -> list[Detection]:
        """Faces in RGB uint8 ``image`` (H,W,3), best score first; with ``rois`` only inside them."""
        ...

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """:meth:`detect` on each whole image; equal-size images are batched together."""
        ...


def make_detector(cfg: DetectorConfig) -> Detector:
    """The detector named by ``cfg.name`` (only ``mtcnn`` so far)."""
    if cfg.name == "mtcnn":
        return MTCNNDetector(cfg)
    raise ValueError(f"unknown detector {cfg.name!r}; available: mtcnn")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (N,4) and ``b`` (M,4), x1,y1,x2,y2 floats -> (N,M) float in [0,1]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def check_image(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is RGB uint8 (H,W,3) with H,W >= 1."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an RGB uint8 image (H,W,3), got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image {image.shape}")


@dataclass
class _Job:
    """One MTCNN input: ``pixels`` (h,w,3) float32 in [0,255] cut from image ``owner`` at
    up-sampling ``scale``; its top-left corner is ``origin`` (x, y) in original pixels; detections
    whose centre falls outside ``valid`` (x1,y1,x2,y2, original pixels) or whose side exceeds
    ``max_side`` (up-sampled pixels) are dropped."""

    owner: int
    scale: tuple[float, float]
    origin: tuple[float, float]
    pixels: np.ndarray
    valid: Box
    max_side: float = math.inf


class MTCNNDetector:
    """Multi-scale MTCNN (facenet-pytorch 2.5.3, bundled weights checked by sha256)."""

    def __init__(self, cfg: DetectorConfig):
        from facenet_pytorch import MTCNN

        from lrfacebench.runtime import resolve_device
        from lrfacebench.weights import locate

        if not cfg.scales or min(cfg.scales) <= 0:
            raise ValueError(f"scales must be positive, got {cfg.scales}")
        if cfg.tile <= cfg.tile_overlap:
            raise ValueError(f"tile ({cfg.tile}) must exceed tile_overlap ({cfg.tile_overlap})")
        for net in ("pnet", "rnet", "onet"):
            locate(f"mtcnn-{net}")  # same files MTCNN loads; fails clearly if missing or altered
        self.cfg = cfg
        self.name = cfg.name
        self.device = resolve_device(cfg.device)
        self.mtcnn = MTCNN(min_face_size=cfg.min_face_size, thresholds=list(cfg.thresholds),
                           factor=cfg.factor, keep_all=True, select_largest=False,
                           post_process=False, device=self.device)
        self.mtcnn.eval()

    # ---- public API ---------------------------------------------------------------------
    def detect(self, image: np.ndarray, rois: Sequence[Box] | None = None) -> list[Detection]:
        check_image(image)
        if rois is None:
            jobs = self._whole_jobs(image, 0)
        else:
            jobs = (j for roi in rois for j in self._roi_jobs(image, roi, 0))
        return self._merge(self._run(jobs), 1)[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        for im in images:
            check_image(im)
        jobs = (j for i, im in enumerate(images) for j in self._whole_jobs(im, i))
        return self._merge(self._run(jobs), len(images))

    # ---- inputs -------------------------------------------------------------------------
    def _whole_jobs(self, image: np.ndarray, owner: int) -> Iterator[_Job]:
        h, w = image.shape[:2]
        for s in self.cfg.scales:
            yield from self._region_jobs(image, (0, 0, w, h), s, owner, (0.0, 0.0, float(w), float(h)))

    def _roi_jobs(self, image: np.ndarray, roi: Box, owner: int) -> Iterator[_Job]:
        """Jobs for one ROI grown by ``roi_expand``; an empty or invalid ROI gives none (logged)."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in roi)
        if not all(map(math.isfinite, (x1, y1, x2, y2))) or x2 <= x1 or y2 <= y1:
            log.warning("skipping invalid ROI %s", roi)
            return
        ex, ey = self.cfg.roi_expand * (x2 - x1), self.cfg.roi_expand * (y2 - y1)
        ix1, iy1 = max(0, math.floor(x1 - ex)), max(0, math.floor(y1 - ey))
        ix2, iy2 = min(w, math.ceil(x2 + ex)), min(h, math.ceil(y2 + ey))
        if ix2 - ix1 < 2 or iy2 - iy1 < 2:
            log.warning("skipping ROI %s: outside the %dx%d image", roi, w, h)
            return
        region = (ix1, iy1, ix2, iy2)
        valid = (float(ix1), float(iy1), float(ix2), float(iy2))
        for s in self.cfg.scales:
            yield from self._region_jobs(image, region, s, owner, valid)

    def _region_jobs(self, image: np.ndarray, region: tuple[int, int, int, int], scale: float,
                     owner: int, valid: Box) -> Iterator[_Job]:
        """Up-sample ``region`` (integer x1,y1,x2,y2) by ``scale``; tile it when too large."""
        x1, y1, x2, y2 = region
        rw, rh = x2 - x1, y2 - y1
        T, O = self.cfg.tile, self.cfg.tile_overlap
        if max(rw, rh) * scale <= T:
            pix = _upsample(image[y1:y2, x1:x2], max(1, round(rw * scale)), max(1, round(rh * scale)))
            yield _Job(owner, (pix.shape[1] / rw, pix.shape[0] / rh), (float(x1), float(y1)), pix, valid)
            return
        # Tiles of ts x ts original pixels (T x T up-sampled) with stride ts - ov; edge tiles are
        # zero-padded so every tile has the same shape and can be batched.
        ts = max(2, int(T // scale))
        ov = min(ts - 1, math.ceil(O / scale))
        for ty in _starts(rh, ts, ov):
            for tx in _starts(rw, ts, ov):
                cut = np.zeros((ts, ts, 3), np.uint8)
                part = image[y1 + ty:min(y2, y1 + ty + ts), x1 + tx:min(x2, x1 + tx + ts)]
                cut[:part.shape[0], :part.shape[1]] = part
                pix = _upsample(cut, round(ts * scale), round(ts * scale))
                s = pix.shape[0] / ts
                yield _Job(owner, (s, s), (float(x1 + tx), float(y1 + ty)), pix, valid, max_side=float(O))

    # ---- running ------------------------------------------------------------------------
    def _run(self, jobs: Iterable[_Job]) -> list[tuple[_Job, np.ndarray, np.ndarray, np.ndarray]]:
        """MTCNN on every job, equal shapes batched as they stream in (at most ``batch_size`` jobs
        and ``_BATCH_PIXELS`` pixels per call); (job, boxes (K,4), scores (K,), points (K,5,2)) in
        original pixels."""
        pending: dict[tuple[int, ...], list[_Job]] = {}
        out: list[tuple[_Job, np.ndarray, np.ndarray, np.ndarray]] = []
        for j in jobs:
            h, w = j.pixels.shape[:2]
            if min(h, w) < self.cfg.min_face_size:
                continue  # no pyramid level fits (facenet-pytorch would fail on it); no face either
            group = pending.setdefault(j.pixels.shape, [])
            group.append(j)
            if len(group) >= min(self.cfg.batch_size, max(1, _BATCH_PIXELS // (h * w))):
                out += self._mtcnn(group)
                group.clear()
        for group in pending.values():
            if group:
                out += self._mtcnn(group)
        return out

    def _mtcnn(self, batch: list[_Job]) -> list[tuple[_Job, np.ndarray, np.ndarray, np.ndarray]]:
        import torch

        x = torch.from_numpy(np.stack([j.pixels for j in batch])).to(self.device)
        boxes, probs, points = self.mtcnn.detect(x, landmarks=True)
        out = []
        for j, b, p, pt in zip(batch, boxes, probs, points):
            if b is not None:  # None: facenet-pytorch's "no face"
                out.append((j, *self._to_original(j, np.asarray(b, np.float64), np.asarray(p, np.float64),
                                                  np.asarray(pt, np.float64))))
        return out

    def _to_original(self, j: _Job, b: np.ndarray, p: np.ndarray, pt: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        sx, sy = j.scale
        ox, oy = j.origin
        b = b / np.array([sx, sy, sx, sy]) + np.array([ox, oy, ox, oy])
        pt = pt / np.array([sx, sy]) + np.array([ox, oy])
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        vx1, vy1, vx2, vy2 = j.valid
        keep = ((p >= self.cfg.min_score) & (side <= j.max_side)
                & (cx >= vx1) & (cx < vx2) & (cy >= vy1) & (cy < vy2))
        return b[keep], p[keep], pt[keep]

    def _merge(self, results: list[tuple[_Job, np.ndarray, np.ndarray, np.ndarray]], n: int
               ) -> list[list[Detection]]:
        """Per image: NMS over every scale, tile and ROI; detections sorted by score, best first."""
        import torch
        from torchvision.ops import nms

        per: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
        for j, b, p, pt in results:
            if len(b):
                per[j.owner].append((b, p, pt))
        out: list[list[Detection]] = []
        for parts in per:
            if not parts:
                out.append([])
                continue
            b = np.concatenate([q[0] for q in parts])
            p = np.concatenate([q[1] for q in parts])
            pt = np.concatenate([q[2] for q in parts])
            keep = nms(torch.from_numpy(b), torch.from_numpy(p), self.cfg.nms_iou).numpy()
            out.append([Detection(tuple(float(v) for v in b[k]), float(p[k]), pt[k].astype(np.float32))
                        for k in keep])
        return out


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets covering ``length`` with ``tile``-long tiles overlapping by ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _upsample(region: np.ndarray, w: int, h: int) -> np.ndarray:
    """Bicubic resize of uint8 ``region`` (h0,w0,3) to float32 (h,w,3) in [0,255].

    Deviation from "one resampling" (``degrade.imresize``): this only prepares detector input
    and never produces a dataset pixel; OpenCV's separable bicubic is O(pixels), while the dense
    matrices of ``imresize`` cost O(H_out*H_in*W) and would dominate detection time on photos.
    """
    import cv2

    src = region.astype(np.float32)
    if (w, h) == (region.shape[1], region.shape[0]):
        return src
    return np.clip(cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255)


# ---- evaluation on annotated photos ----------------------------------------------------

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


def load_dlib_annotated(folder: str | Path, xml_files: Sequence[str] = ("training.xml", "testing.xml")
                        ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Photos and face boxes of a dlib ``examples/faces``-style folder: (file names, RGB uint8
    images, (N,4) boxes), sorted by file name. Raises ``ValueError`` for a missing or malformed file."""
    from lrfacebench.io import UnreadableImage, read_rgb

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
    import torch

    from lrfacebench.degrade import imresize

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
    raw, final = _Tally(), _Tally()
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


@dataclass
class _Tally:
    """Running match counts of :func:`evaluate_on_annotated`."""

    n_gt: int = 0
    n_det: int = 0
    n_tp: int = 0

    def __post_init__(self) -> None:
        self.ious: list[float] = []
        self.unmatched: list[tuple[int, Detection, np.ndarray]] = []

    def add(self, k: int, img: np.ndarray, dets: list[Detection], gt: np.ndarray, min_iou: float) -> None:
        pairs = match_greedy(np.array([d.box for d in dets]).reshape(-1, 4), gt, min_iou)
        matched = {i for i, _, _ in pairs}
        self.unmatched += [(k, d, img) for i, d in enumerate(dets) if i not in matched]
        self.ious += [v for _, _, v in pairs]
        self.n_gt, self.n_det, self.n_tp = self.n_gt + len(gt), self.n_det + len(dets), self.n_tp + len(pairs)

    def summary(self) -> dict[str, Any]:
        return {"recall": self.n_tp / max(self.n_gt, 1),
                "precision": self.n_tp / self.n_det if self.n_det else 1.0,
                "mean_iou": float(np.mean(self.ious)) if self.ious else 0.0,
                "n_gt": self.n_gt, "n_det": self.n_det, "n_tp": self.n_tp}
