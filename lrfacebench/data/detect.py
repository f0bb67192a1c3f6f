"""Tiny-face detection: a Detector interface and an MTCNN adapter that finds faces of 6-24 px.

MTCNN's P-Net window is 12 px, so at native scale it misses most faces of 16 px or less.
:class:`MTCNNDetector` therefore searches the image, or regions of interest (PIPA head boxes,
DukeMTMC person boxes), up-sampled. By default (``schedule = "pyramid"``) it runs one MTCNN
pyramid per region from the largest of ``DetectorConfig.scales`` down, with P-Net tiled and the
R-Net/O-Net candidates of all levels, tiles, regions and images batched
(:mod:`lrfacebench.data.cascade`). ``schedule = "per_scale"`` is the former search, kept for
side-by-side measurements: facenet-pytorch's ``MTCNN.detect`` on each bicubic up-sampled copy
(x1, x2, x4), large copies cut into equal overlapping tiles so that they can be batched
(facenet-pytorch batches only equal-size images). Either way boxes and landmarks are mapped back
to original pixels and merged by non-maximum suppression.

Images are RGB ``uint8`` arrays ``(H,W,3)``; boxes are ``(x1, y1, x2, y2)`` floats in
original pixels; landmarks are ``(5,2)`` float ``(x, y)`` in original pixels in MTCNN's
order: left eye, right eye, nose, left and right mouth corner (left = image left).

:mod:`lrfacebench.data.annotated` measures recall and precision on photos with annotated faces.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from torchvision.ops import boxes as box_ops
from torchvision.ops import nms

from lrfacebench.data.cascade import Cascade, Region, level_scales
from lrfacebench.runtime import resolve_device
from lrfacebench.weights import locate

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
_BATCH_PIXELS = 1 << 24  # per_scale: at most this many up-sampled pixels per MTCNN call (bounds its memory)
SCHEDULES = ("pyramid", "per_scale")


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

    ``scales``: up-sampling factors of the image (or ROI). With ``min_face_size=12`` (the P-Net
    window, in up-sampled pixels) a scale ``s`` finds faces from ``12/s`` original pixels up, so
    (1, 2, 4) reaches 3 px faces while scale 1 sees large faces at native resolution.
    ``schedule``: ``pyramid`` (default) searches one MTCNN pyramid from ``max(scales)`` down to
    the smallest level (:func:`lrfacebench.data.cascade.level_scales`): its levels x4, x2.84, x2.01,
    x1.43, x1.01, ... are those of the x2 and x1 pyramids too (``factor**2`` = 0.503), so the other
    scales add nothing; ``per_scale`` runs one facenet-pytorch pyramid per scale and merges them
    by NMS (``nms_iou``), the former search (on the shrunk dlib photos (1, 2, 4) was as accurate
    as (1, 2, 3, 4) at 70 % of its time). ``pnet_tile``: pyramid: P-Net input tiles of at most
    this side (even, level px), which bounds its memory without changing what it finds.
    ``level_margins``: pyramid, given the face sizes to find (a build passes the size filter's
    ``min_avg_size`` and ``max_avg_size``): the levels searched beyond those that find such faces,
    (below, above). (0, 2) skips x4 and x2.84 (faces under 6 px: half of the P-Net pixels) and the
    levels for faces over 33 px. On the sample's dlib photos shrunk to 6.5-15 px (0, 1) already
    finds what (1, all levels above) found, while (0, 0) lost 3 of 43 faces at 12 px; on the
    sample clip shrunk x0.5 (0, 1) kept 7 faces where (0, 2) and all levels keep the same 10.
    ``thresholds``: P-, R-, O-Net probability thresholds (facenet-pytorch: 0.6, 0.7, 0.7). P-Net
    is raised to 0.7: on up-sampled photos it passes thousands of texture windows to R-Net (the
    per_scale search used 0.8, which halves them; with one pyramid 0.8 lost 2 of 43 faces at
    9 px on the sample's dlib photos, 0.7 none, for 1.5x R-Net candidates); O-Net is lowered to
    0.6 so that the ``low_score`` filter (0.7) records what it drops.
    ``min_score``: detections below it are dropped before merging. ``factor``: MTCNN pyramid
    step. ``roi_expand``: each ROI grows by this fraction of its width/height on every side
    before the search (context for MTCNN). ``tile``/``tile_overlap``: an up-sampled input larger
    than ``tile`` x ``tile`` pixels is cut into tiles of that size overlapping by ``tile_overlap``
    (up-sampled pixels); a tiled pass keeps only faces no larger than the overlap (larger ones
    come from a lower scale); ``per_scale`` only. ``batch_size``: per_scale: equal-size inputs
    per MTCNN call; both: the photos the builder gives the detector at a time.
    ``max_work_pixels``: the most up-sampled pixels (the sum over scales of W*H*s^2) one whole
    photo is searched with; a larger photo gets the reduced scale set of :func:`bounded_scales`,
    or none (the builder skips it). The default, 2^25 (33.5 M), searches a 1.5 MP photo at
    (1, 2, 4), a 6 MP one at (1, 2), a 12 MP one at (1,) and skips a 48 MP one: at 2.5-3.5 s per
    million up-sampled pixels on a shared 2-core CPU (docs/reliability.md), a photo costs about a
    minute instead of the 21 minutes a 48 MP photo took at x4 with ``per_scale`` (the pyramid
    schedule costs less than the cap counts). MTCNN's memory is bounded apart from it: by
    ``pnet_tile`` (pyramid), by the pixels per call (``_BATCH_PIXELS``) and the tiles (per_scale).
    ``device``: ``auto``, ``cpu``, ``cuda[:N]``.
    """

    name: str = "mtcnn"
    scales: tuple[float, ...] = (1.0, 2.0, 4.0)
    schedule: str = "pyramid"
    min_face_size: float = 12.0
    thresholds: tuple[float, float, float] = (0.7, 0.7, 0.6)
    factor: float = 0.709
    min_score: float = 0.6
    nms_iou: float = 0.3
    roi_expand: float = 0.5
    tile: int = 2048
    tile_overlap: int = 256
    pnet_tile: int = 512
    level_margins: tuple[int, int] = (0, 2)
    batch_size: int = 8
    max_work_pixels: float = float(1 << 25)
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"detector.scales must be positive, got {self.scales}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"detector.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if len(self.level_margins) != 2 or min(self.level_margins) < 0:
            raise ValueError(f"detector.level_margins must be two counts >= 0, got {self.level_margins}")
        if self.pnet_tile < 32 or self.pnet_tile % 2:
            raise ValueError(f"detector.pnet_tile must be even and >= 32, got {self.pnet_tile}")
        if self.tile <= self.tile_overlap:
            raise ValueError(f"detector.tile ({self.tile}) must exceed detector.tile_overlap ({self.tile_overlap})")
        if not self.max_work_pixels > 0:
            raise ValueError(f"detector.max_work_pixels must be positive, got {self.max_work_pixels}")
        if self.min_face_size <= 0 or self.batch_size < 1:
            raise ValueError(f"detector.min_face_size must be positive and detector.batch_size >= 1, got "
                             f"{self.min_face_size} and {self.batch_size}")


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray, rois: Sequence[Box] | None = None,
               smallest_face: float = 0.0, largest_face: float = math.inf) -> list[Detection]:
        """Faces in RGB uint8 ``image`` (H,W,3), best score first; with ``rois`` only inside them.
        ``smallest_face``, ``largest_face``: original px; the search may skip what finds only
        smaller or only larger faces."""
        ...

    def detect_many(self, images: Sequence[np.ndarray], scales: Sequence[tuple[float, ...]] | None = None,
                    smallest_face: float = 0.0, largest_face: float = math.inf) -> list[list[Detection]]:
        """:meth:`detect` on each whole image, searched together.
        ``scales``: per image, the up-sampling factors to use instead of the configured ones."""
        ...


def make_detector(cfg: DetectorConfig) -> Detector:
    """The detector named by ``cfg.name`` (only ``mtcnn`` so far)."""
    if cfg.name == "mtcnn":
        return MTCNNDetector(cfg)
    raise ValueError(f"unknown detector {cfg.name!r}; available: mtcnn")


def bounded_scales(width: int, height: int, cfg: DetectorConfig, smallest_face: float) -> tuple[float, ...]:
    """The scales of ``cfg`` a ``width`` x ``height`` image is searched at within
    ``cfg.max_work_pixels`` up-sampled pixels, in ``cfg.scales`` order.

    All of them when they fit. Otherwise the scale that reaches faces of ``smallest_face``
    original px comes first (scale ``s`` finds faces from ``min_face_size / s`` px up: the
    smallest such scale, else the largest one), then the others from the cheapest, each kept
    while the total fits. ``()`` when not even one scale fits.
    """
    cost = {s: width * height * s * s for s in cfg.scales}
    if sum(cost.values()) <= cfg.max_work_pixels:
        return tuple(cfg.scales)
    reaching = [s for s in cfg.scales if cfg.min_face_size / s <= smallest_face]
    first = min(reaching) if reaching else max(cfg.scales)
    kept, total = [], 0.0
    for s in [first, *sorted((s for s in cfg.scales if s != first), key=cost.get)]:
        if total + cost[s] <= cfg.max_work_pixels:
            kept.append(s)
            total += cost[s]
    return tuple(s for s in cfg.scales if s in kept)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (N,4) and ``b`` (M,4), x1,y1,x2,y2 floats with x1 <= x2, y1 <= y2 ->
    (N,M) float64 in [0,1] (``torchvision.ops.box_iou``; 0 where both boxes are empty)."""
    a = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return torch.nan_to_num(box_ops.box_iou(a, b), nan=0.0).numpy()


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


def _whole_region(image: np.ndarray) -> tuple[tuple[int, int, int, int], Box]:
    """The search region of a whole ``(H,W,3)`` image: (integer box, valid box)."""
    h, w = image.shape[:2]
    return (0, 0, w, h), (0.0, 0.0, float(w), float(h))


class MTCNNDetector:
    """Multi-scale MTCNN (facenet-pytorch 2.5.3 networks, bundled weights checked by sha256)."""

    def __init__(self, cfg: DetectorConfig):  # cfg's values are checked by DetectorConfig itself
        for net in ("pnet", "rnet", "onet"):
            locate(f"mtcnn-{net}")  # same files MTCNN loads; fails clearly if missing or altered
        self.cfg = cfg
        self.name = cfg.name
        self.device = resolve_device(cfg.device)
        self.mtcnn = MTCNN(min_face_size=cfg.min_face_size, thresholds=list(cfg.thresholds),
                           factor=cfg.factor, keep_all=True, select_largest=False,
                           post_process=False, device=self.device)
        self.mtcnn.eval()
        self.cascade = (Cascade(self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet, cfg.thresholds, cfg.pnet_tile)
                        if cfg.schedule == "pyramid" else None)

    # ---- public API ---------------------------------------------------------------------
    def detect(self, image: np.ndarray, rois: Sequence[Box] | None = None,
               smallest_face: float = 0.0, largest_face: float = math.inf) -> list[Detection]:
        """See :meth:`Detector.detect`; the face bounds are used by the pyramid schedule only."""
        check_image(image)
        found = ([r for roi in rois if (r := self._roi_region(image, roi))] if rois is not None
                 else [_whole_region(image)])
        if self.cascade is not None:
            return self._merge(self._search([image], [(0, r, v, tuple(self.cfg.scales)) for r, v in found],
                                            (smallest_face, largest_face)), 1)[0]
        jobs = (j for r, v in found for s in self.cfg.scales for j in self._region_jobs(image, r, s, 0, v))
        return self._merge(self._run(jobs), 1)[0]

    def detect_many(self, images: Sequence[np.ndarray], scales: Sequence[tuple[float, ...]] | None = None,
                    smallest_face: float = 0.0, largest_face: float = math.inf) -> list[list[Detection]]:
        """See :meth:`Detector.detect_many`; the face bounds are used by the pyramid schedule only."""
        for im in images:
            check_image(im)
        per = [tuple(self.cfg.scales)] * len(images) if scales is None else list(scales)
        whole = [_whole_region(im) for im in images]
        if self.cascade is not None:
            return self._merge(self._search(images, [(i, r, v, per[i]) for i, (r, v) in enumerate(whole)],
                                            (smallest_face, largest_face)), len(images))
        jobs = (j for i, im in enumerate(images) for s in per[i]
                for j in self._region_jobs(im, whole[i][0], s, i, whole[i][1]))
        return self._merge(self._run(jobs), len(images))

    # ---- regions ------------------------------------------------------------------------
    def _roi_region(self, image: np.ndarray, roi: Box) -> tuple[tuple[int, int, int, int], Box] | None:
        """One ROI grown by ``roi_expand`` and clipped to the image: (integer region, valid box);
        ``None`` for an empty or invalid ROI (logged)."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in roi)
        if not all(map(math.isfinite, (x1, y1, x2, y2))) or x2 <= x1 or y2 <= y1:
            log.warning("skipping invalid ROI %s", roi)
            return None
        ex, ey = self.cfg.roi_expand * (x2 - x1), self.cfg.roi_expand * (y2 - y1)
        ix1, iy1 = max(0, math.floor(x1 - ex)), max(0, math.floor(y1 - ey))
        ix2, iy2 = min(w, math.ceil(x2 + ex)), min(h, math.ceil(y2 + ey))
        if ix2 - ix1 < 2 or iy2 - iy1 < 2:
            log.warning("skipping ROI %s: outside the %dx%d image", roi, w, h)
            return None
        return (ix1, iy1, ix2, iy2), (float(ix1), float(iy1), float(ix2), float(iy2))

    # ---- the pyramid schedule -----------------------------------------------------------
    def _search(self, images: Sequence[np.ndarray],
                regions: Sequence[tuple[int, tuple[int, int, int, int], Box, tuple[float, ...]]],
                faces: tuple[float, float]) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """:class:`Cascade` over (owner, region, valid box, scales) searches, image by image, each
        one pyramid from its largest scale without the levels that find only faces outside
        ``faces`` (smallest, largest; original px); (owner, boxes, scores, points) kept by
        :meth:`_keep`."""
        c = self.cfg
        assert self.cascade is not None
        out = []
        for owner, image in enumerate(images):
            mine = [(r, v, sc) for o, r, v, sc in regions if o == owner and sc]
            plan = [Region(r, level_scales(r[2] - r[0], r[3] - r[1], max(sc), c.min_face_size, c.factor,
                                           *faces, tuple(c.level_margins)), max(sc)) for r, _, sc in mine]
            found = self.cascade(image, plan)
            region, boxes, scores, points = (t.numpy() for t in (found.region, found.boxes, found.scores, found.points))
            for i, (_, valid, _) in enumerate(mine):
                sel = region == i
                b, p, pt = boxes[sel], scores[sel], points[sel]
                keep = self._keep(b, p, valid)
                out.append((owner, b[keep], p[keep], pt[keep]))
        return out

    def _keep(self, b: np.ndarray, p: np.ndarray, valid: Box, max_side: float = math.inf,
              side: np.ndarray | None = None) -> np.ndarray:
        """Mask of detections (boxes ``b`` (K,4), scores ``p``) scoring >= ``min_score`` whose
        centre lies in ``valid`` and whose ``side`` (up-sampled px; per_scale tiles) <= ``max_side``."""
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        vx1, vy1, vx2, vy2 = valid
        keep = (p >= self.cfg.min_score) & (cx >= vx1) & (cx < vx2) & (cy >= vy1) & (cy < vy2)
        return keep if side is None else keep & (side <= max_side)

    # ---- the per_scale schedule ---------------------------------------------------------
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

    def _run(self, jobs: Iterable[_Job]) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """MTCNN on every job, equal shapes batched as they stream in (at most ``batch_size`` jobs
        and ``_BATCH_PIXELS`` pixels per call); (owner, boxes (K,4), scores (K,), points (K,5,2))
        in original pixels."""
        pending: dict[tuple[int, ...], list[_Job]] = {}
        out: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
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

    def _mtcnn(self, batch: list[_Job]) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        x = torch.from_numpy(np.stack([j.pixels for j in batch])).to(self.device)
        boxes, probs, points = self.mtcnn.detect(x, landmarks=True)
        out = []
        for j, b, p, pt in zip(batch, boxes, probs, points):
            if b is not None:  # None: facenet-pytorch's "no face"
                out.append(self._to_original(j, np.asarray(b, np.float64), np.asarray(p, np.float64),
                                             np.asarray(pt, np.float64)))
        return out

    def _to_original(self, j: _Job, b: np.ndarray, p: np.ndarray, pt: np.ndarray
                     ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        sx, sy = j.scale
        ox, oy = j.origin
        b = b / np.array([sx, sy, sx, sy]) + np.array([ox, oy, ox, oy])
        pt = pt / np.array([sx, sy]) + np.array([ox, oy])
        keep = self._keep(b, p, j.valid, j.max_side, side)
        return j.owner, b[keep], p[keep], pt[keep]

    # ---- merging ------------------------------------------------------------------------
    def _merge(self, results: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], n: int
               ) -> list[list[Detection]]:
        """Per image: NMS over every scale, tile and ROI; detections sorted by score, best first."""
        per: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
        for owner, b, p, pt in results:
            if len(b):
                per[owner].append((b, p, pt))
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
    src = region.astype(np.float32)
    if (w, h) == (region.shape[1], region.shape[0]):
        return src
    return np.clip(cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255)
