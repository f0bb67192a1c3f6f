"""Sharded, resumable dataset building (img2dataset style).

A build is a deterministic *plan* (the reader's items cut into shards of ``shard_size`` items;
it never depends on ``--workers`` or ``--shard``), a picklable per-shard worker, and a merge.

Layout of ``--out``::

    plan.json             source, root, resolved config and its hash, plan hash, shard count
    shards/s00003.json    shard 3's records (kept faces, rejected candidates, unreadable inputs,
                          stats). Written atomically and last: its existence means "shard done".
    crops/ lr16/ hr64/    face PNGs named by face id, written atomically by the workers
    rejected/             up to ``review_per_reason`` crops per rejection reason and shard
    manifest.csv ...      written by the merge (see :func:`merge`)

A worker killed mid-shard leaves no marker, so the shard is redone from scratch on restart and
rewrites the same files with the same bytes; a build killed at any moment and restarted ends
with exactly the manifest of an uninterrupted build.
"""
from __future__ import annotations

import base64
import csv
import io as _io
import json
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from lrfacebench import config as cfglib
from lrfacebench.data.detect import (Detection, DetectorConfig, evaluate_on_annotated, make_detector,
                                     match_greedy)
from lrfacebench.data.filters import (Candidate, FilterConfig, crop_face, crop_rect, filter_candidates,
                                      near_duplicates, quality_filter)
from lrfacebench.data.sources import get_source
from lrfacebench.data.sources import rule as source_rule
from lrfacebench.data.sources.base import Annot, Item, LrRule, Problem, SceneRule, Shrunk, best_annot
from lrfacebench.data.manifest import REJECTED_COLUMNS, UNREADABLE_COLUMNS, manifest_columns, write_csv
from lrfacebench.io import UnreadableImage, read_rgb, sha256_file, sha256_json, write_json, write_png

log = logging.getLogger(__name__)

@dataclass
class BuildOptions:
    """How the builder itself works (the ``[build]`` table of a recipe).

    ``shard_size``: items (photos/frames) per shard. ``identity_min_overlap``: fraction of a face
    box that must lie inside an annotated head/person box to take its identity.
    ``lr_size``/``hr_size``: output sizes. ``limit``: first N items only (0 = all).
    ``review_per_reason``: rejected crops kept per reason and shard for the review sheets;
    ``review_faces``: faces per contact sheet; ``review_sheets``: at most this many sheets of kept
    faces. ``dedupe_window``: near-duplicates are also searched in this many preceding shards.
    ``eval_face_sizes``: photos with annotated face boxes are also shrunk so their faces average
    these sizes (px) and the detector's recall and precision are measured there (``eval_min_iou``),
    with the recipe's detector at ``eval_scales`` (empty: the recipe's scales).
    """

    shard_size: int = 16
    identity_min_overlap: float = 0.5
    lr_size: int = 16
    hr_size: int = 64
    limit: int = 0
    review_per_reason: int = 8
    review_faces: int = 256
    review_sheets: int = 40
    dedupe_window: int = 2
    eval_face_sizes: tuple[float, ...] = ()
    eval_min_iou: float = 0.4
    eval_scales: tuple[float, ...] = ()


@dataclass
class BuildConfig:
    """A resolved recipe: ``name`` (data card), ``source`` (``{"name": reader, **reader options}``),
    detector, filters and builder options."""

    name: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    build: BuildOptions = field(default_factory=BuildOptions)

    def reader_options(self) -> Any:
        reader = get_source(self.source.get("name", self.name))
        return cfglib.from_dict(reader.Options, {k: v for k, v in self.source.items() if k != "name"})

    def compat_hash(self) -> str:
        """Hash of everything that changes the output (not the device it runs on)."""
        d = cfglib.to_dict(self)
        d["detector"] = {k: v for k, v in d["detector"].items() if k != "device"}
        return sha256_json(d)


def config_from_dict(d: dict[str, Any]) -> BuildConfig:
    return cfglib.from_dict(BuildConfig, d)


# ---- plan -----------------------------------------------------------------------------------
@dataclass
class Plan:
    """The items of a build in order, cut into shards; ``problems`` found by the reader."""

    source: str
    kind: str
    root: Path
    items: list[Item]
    problems: list[Problem]
    files: list[Path]
    shard_size: int

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self.items) / self.shard_size)

    def shard(self, index: int) -> list[Item]:
        return self.items[index * self.shard_size:(index + 1) * self.shard_size]

    def digest(self) -> str:
        return sha256_json({"items": [it.to_json() for it in self.items], "shard_size": self.shard_size})


def make_plan(cfg: BuildConfig, root: Path) -> Plan:
    """Scan the source (the reader's official layout) and cut its items into shards."""
    name = cfg.source.get("name", cfg.name)
    reader = get_source(name)
    scan = reader.scan(root, cfg.reader_options())
    items = scan.items[: cfg.build.limit] if cfg.build.limit > 0 else scan.items
    if cfg.build.shard_size < 1:
        raise ValueError(f"build.shard_size must be >= 1, got {cfg.build.shard_size}")
    return Plan(name, reader.KIND, scan.root or root, items, scan.problems, scan.files, cfg.build.shard_size)


def shard_path(out: Path, index: int) -> Path:
    return out / "shards" / f"s{index:05d}.json"


# ---- worker ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardJob:
    """Everything a worker process needs (picklable)."""

    out: str
    root: str
    index: int
    plan_hash: str
    config: dict[str, Any]
    items: tuple[dict[str, Any], ...]


_DETECTOR: dict[str, Any] = {}  # detectors of this process (build + evaluation), keyed by config


def _detector(cfg: DetectorConfig) -> Any:
    key = sha256_json(cfglib.to_dict(cfg))
    if key not in _DETECTOR:
        if len(_DETECTOR) >= 2:
            _DETECTOR.clear()
        _DETECTOR[key] = make_detector(cfg)
    return _DETECTOR[key]


def run_shard(job: ShardJob, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Process one shard, then write its done-marker ``shards/sNNNNN.json`` (atomically, last).

    Returns a short summary ``{"shard", "items", "kept"}``. ``progress(n)`` is called after
    every ``n`` items when given (in-process builds).
    """
    cfg = config_from_dict(job.config)
    worker = _ShardWorker(cfg, Path(job.root), Path(job.out), job.index)
    record = worker.run([Item.from_json(d) for d in job.items], progress)
    record["plan_hash"] = job.plan_hash
    write_json(shard_path(Path(job.out), job.index), record)
    return {"shard": job.index, "items": len(job.items), "kept": len(record["kept"])}


@dataclass
class _Face:
    """A candidate face and where it came from; ``reason`` is set when already rejected."""

    item: Item
    detection: Detection
    crop: np.ndarray
    image_size: tuple[int, int]
    identity: str
    whole: bool = False  # the image itself is the face (pre-cropped genuine-LR faces)
    reason: str | None = None
    hr: np.ndarray | None = None  # paired sets: the 64x64 HR face
    lr: np.ndarray | None = None  # paired sets with a source rule: the 16x16 LR face (else DS(hr))
    columns: dict[str, Any] = field(default_factory=dict)  # the source rule's extra manifest cells


class _ShardWorker:
    """Reads, detects, filters and writes one shard; collects its records and stats."""

    def __init__(self, cfg: BuildConfig, root: Path, out: Path, index: int) -> None:
        self.cfg, self.root, self.out, self.index = cfg, root, out, index
        self.faces: list[_Face] = []
        self.unreadable: list[Problem] = []
        self.inputs: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.timings: Counter[str] = Counter()
        self.evals: dict[str, Counter[str]] = defaultdict(Counter)
        self._video: tuple[str, Any] | None = None
        self.rule = source_rule(cfg.source.get("name", cfg.name))
        self.reader_options = cfg.reader_options() if self.rule else None
        self._scenes: dict[str, tuple[np.ndarray, Shrunk]] = {}  # scene items: original photo, shrunk one

    def run(self, items: list[Item], progress: Callable[[int], None] | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        if any(it.mode in ("detect", "roi", "scene") for it in items):
            _detector(self.cfg.detector)  # a missing weight file or device stops the build here, clearly
        step = max(1, self.cfg.detector.batch_size)
        for i in range(0, len(items), step):
            self._chunk(items[i:i + step])
            if progress:
                progress(len(items[i:i + step]))
        if self._video:
            self._video[1].close()
        record = self._finish()
        self.timings["total_s"] = time.perf_counter() - t0
        record["stats"] = {"counts": dict(self.counts),
                           "timings": {k: round(v, 3) for k, v in self.timings.items()},
                           "detector_eval": {k: dict(v) for k, v in self.evals.items()}}
        return record

    # -- reading ------------------------------------------------------------------------------
    def _load(self, item: Item) -> np.ndarray:
        from lrfacebench.data.sources.video import FrameReader

        path = self.root / item.source
        if _is_video(item):
            if self._video is None or self._video[0] != item.source:
                if self._video:
                    self._video[1].close()
                self._video = (item.source, FrameReader(path))
            return self._video[1].read(item.frame)
        image = read_rgb(path)
        if item.source not in self.inputs:
            self.inputs[item.source] = sha256_file(path)
        return image

    def _valid_annots(self, item: Item, image: np.ndarray) -> tuple[Annot, ...]:
        """Annotations that overlap the image; the others are reported as bad input."""
        h, w = image.shape[:2]
        keep = []
        for a in item.annots:
            x1, y1, x2, y2 = a.box
            if item.mode != "paired" and (x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h):
                file, _, line = a.ref.rpartition(":") if ":" in a.ref else (a.ref, "", "")
                where = tuple(round(v, 1) for v in a.box)
                self.unreadable.append(Problem(file or item.source, line,
                                               f"box {where} outside the {w}x{h} image {item.source}"))
                continue
            keep.append(a)
        return tuple(keep)

    # -- one chunk of items -------------------------------------------------------------------
    def _chunk(self, items: list[Item]) -> None:
        t = time.perf_counter()
        loaded: list[tuple[Item, np.ndarray, tuple[Annot, ...]]] = []
        for item in items:
            self.counts["items"] += 1
            try:
                image = self._load(item)
            except UnreadableImage as e:
                self.counts["items_unreadable"] += 1
                self._problem(item, str(e))
                continue
            if item.mode == "scene" and (image := self._shrink(item, image)) is None:
                continue
            loaded.append((item, image, self._valid_annots(item, image)))
        self.timings["read_s"] += time.perf_counter() - t
        t = time.perf_counter()
        try:
            dets = self._detect(loaded)
        except Exception:  # noqa: BLE001 -- one odd input must not stop the build: retry one by one
            loaded, dets = self._detect_each(loaded)
        self.timings["detect_s"] += time.perf_counter() - t
        t = time.perf_counter()
        for (item, image, annots), found in zip(loaded, dets):
            try:
                if item.mode == "paired":
                    self._paired(item, image, annots)
                    continue
                if item.mode == "scene":
                    self._scene(item, image, found)
                    continue
                self._candidates(item, image, annots, found)
                if any(a.is_face for a in annots) and item.mode in ("detect", "roi"):
                    self._evaluate(image, annots, found)
            except Exception as e:  # noqa: BLE001 -- reported, counted, logged; the build goes on
                log.exception("failed on %s", item.source)
                self._problem(item, f"processing failed: {type(e).__name__}: {e}")
        self.timings["crop_s"] += time.perf_counter() - t

    def _problem(self, item: Item, reason: str) -> None:
        self.unreadable.append(Problem(item.source, f"frame {item.frame}" if _is_video(item) else "", reason))

    def _detect_each(self, loaded: list[tuple[Item, np.ndarray, tuple[Annot, ...]]]
                     ) -> tuple[list[tuple[Item, np.ndarray, tuple[Annot, ...]]], list[list[Detection]]]:
        """Detection item by item after a batch failed; failing items are reported and dropped."""
        ok, dets = [], []
        for entry in loaded:
            try:
                dets += self._detect([entry])
                ok.append(entry)
            except Exception as e:  # noqa: BLE001
                log.exception("detection failed on %s", entry[0].source)
                self._problem(entry[0], f"detection failed: {type(e).__name__}: {e}")
        return ok, dets

    def _detect(self, loaded: list[tuple[Item, np.ndarray, tuple[Annot, ...]]]) -> list[list[Detection]]:
        out: list[list[Detection]] = [[] for _ in loaded]
        whole = [i for i, (it, _, _) in enumerate(loaded) if it.mode in ("detect", "scene")]
        if whole:
            found = _detector(self.cfg.detector).detect_many([loaded[i][1] for i in whole])
            for i, f in zip(whole, found):
                out[i] = f
        for i, (item, image, annots) in enumerate(loaded):
            if item.mode == "roi" and annots:
                out[i] = _detector(self.cfg.detector).detect(image, rois=[a.roi or a.box for a in annots])
        return out

    def _candidates(self, item: Item, image: np.ndarray, annots: tuple[Annot, ...],
                    found: list[Detection]) -> None:
        h, w = image.shape[:2]
        if item.mode == "gt":
            found = [Detection(a.box, math.nan, None) for a in annots if a.is_face]
            pre = [a.reject or None for a in annots if a.is_face]
            whole = [a.attr("whole") == 1 for a in annots if a.is_face]
        else:
            pre, whole = [None] * len(found), [False] * len(found)
        min_overlap = self.cfg.build.identity_min_overlap
        for det, reason, is_whole in zip(found, pre, whole):
            owner = best_annot(det.box, annots, min_overlap)
            self.faces.append(_Face(item, det, crop_face(image, det.box), (w, h),
                                    owner.identity if owner else item.identity, is_whole, reason))

    def _paired(self, item: Item, image: np.ndarray, annots: tuple[Annot, ...]) -> None:
        """HR = the fixed crop resized to hr_size; LR = DS(HR) (made when written) or the source's
        LR rule of the HR, all quantised to uint8."""
        h, w = image.shape[:2]
        crop_box = annots[0]
        x1, y1, x2, y2 = crop_box.box
        rw, rh = crop_box.attr("ref_w"), crop_box.attr("ref_h")
        if rw and rh and (w, h) != (rw, rh):  # the rule is stated for the official image size
            sx, sy = w / rw, h / rh
            x1, y1, x2, y2 = x1 * sx, y1 * sy, x2 * sx, y2 * sy
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            self.unreadable.append(Problem(crop_box.ref or item.source, "",
                                           f"crop box outside the {w}x{h} image {item.source}"))
            return
        box = (x1, y1, x2, y2)
        crop = _padded_crop(image, box)
        b = self.cfg.build
        hr = _resize(crop, b.hr_size)
        lr, columns = (self.rule.make(hr, item, self.reader_options, b.lr_size) if isinstance(self.rule, LrRule)
                       else (None, {}))
        self.faces.append(_Face(item, Detection(box, math.nan, None), crop, (w, h), item.identity,
                                reason=None, hr=hr, lr=lr, columns=columns))

    def _shrink(self, item: Item, photo: np.ndarray) -> np.ndarray | None:
        """The source's :class:`SceneRule` shrinks ``photo`` (kept for the HR crops); ``None`` when
        the rule skips it or fails (reported in ``unreadable.csv``)."""
        import dataclasses

        assert isinstance(self.rule, SceneRule), "scene items need a source with a SceneRule"
        native = dataclasses.replace(self.cfg.detector, scales=(1.0,))
        try:
            shrunk = self.rule.shrink(photo, item, self.reader_options, lambda im: _detector(native).detect(im))
        except Exception as e:  # noqa: BLE001 -- reported, counted, logged; the build goes on
            log.exception("shrinking failed on %s", item.source)
            shrunk = f"shrinking failed: {type(e).__name__}: {e}"
        if isinstance(shrunk, str):
            self.counts["scenes_skipped"] += 1
            self._problem(item, shrunk)
            return None
        self._scenes[item.source] = (photo, shrunk)
        return shrunk.image

    def _scene(self, item: Item, small: np.ndarray, found: list[Detection]) -> None:
        """Faces detected in a shrunk photo, filtered like genuine-LR faces later on, each paired
        with the same box cut from the original photo (HR, ``_padded_crop`` resized to hr_size);
        LR = the crop resized to lr_size (the genuine-LR rule). A face smaller than the rule's
        ``min_hr`` in the original is rejected as ``hr_too_small``."""
        photo, shrunk = self._scenes.pop(item.source)
        b = self.cfg.build
        sx, sy = shrunk.scale
        first = len(self.faces)
        self._candidates(item, small, (), found)
        for face in self.faces[first:]:
            x1, y1, x2, y2 = face.detection.box
            box = (x1 / sx, y1 / sy, x2 / sx, y2 / sy)
            size = (box[2] - box[0] + box[3] - box[1]) / 2
            face.hr = _resize(_padded_crop(photo, box), b.hr_size)
            face.lr = _resize(face.crop, b.lr_size)
            face.columns = {**shrunk.values, **dict(zip(("hr_x1", "hr_y1", "hr_x2", "hr_y2"),
                                                        (round(v, 2) for v in box))), "hr_size": round(size, 2)}
            if face.reason is None and size < shrunk.min_hr:
                face.reason = "hr_too_small"

    def _evaluate(self, image: np.ndarray, annots: tuple[Annot, ...], found: list[Detection]) -> None:
        """Detector recall/precision on the item's annotated faces: at native size (this build's
        detections), then on copies shrunk so the faces average each ``eval_face_sizes`` px, before
        and after the quality filters (``filters.quality_filter``: all but size and duplicates)."""
        import dataclasses

        b = self.cfg.build
        gt = np.array([a.box for a in annots if a.is_face], dtype=np.float64)
        _tally(self.evals["native/detector"], _match_counts(found, gt, b.eval_min_iou))
        dcfg = dataclasses.replace(self.cfg.detector, scales=b.eval_scales) if b.eval_scales else self.cfg.detector
        for size in b.eval_face_sizes:
            r = evaluate_on_annotated(_detector(dcfg), [image], [gt], float(size), b.eval_min_iou,
                                      verify=quality_filter(self.cfg.filters))
            _tally(self.evals[f"{size:g}px/detector"], r["raw"])
            _tally(self.evals[f"{size:g}px/detector+filters"], r)

    # -- filtering and writing -----------------------------------------------------------------
    def _finish(self) -> dict[str, Any]:
        t = time.perf_counter()
        reasons = self._filter()
        self.timings["filter_s"] += time.perf_counter() - t
        t = time.perf_counter()
        kept, rejected, thumbs = [], [], {}
        per_reason: Counter[str] = Counter()
        for k, (face, reason) in enumerate(zip(self.faces, reasons)):
            fid = f"s{self.index:05d}-{k:06d}"
            self.counts["candidates"] += 1
            if reason is None:
                row, lr = self._write_face(fid, face)
                kept.append(row)
                thumbs[fid] = base64.b64encode(lr.tobytes()).decode()
                continue
            crop = ""
            if per_reason[reason] < self.cfg.build.review_per_reason:
                per_reason[reason] += 1
                crop = f"rejected/{fid}.png"
                write_png(self.out / crop, face.crop)
            rejected.append({**_box_row(fid, face), "candidate": fid, "reason": reason, "crop": crop,
                             "detail": ""})
        self.counts["kept"] += len(kept)
        self.timings["write_s"] += time.perf_counter() - t
        return {"shard": self.index, "kept": kept, "rejected": rejected, "thumbs": thumbs,
                "unreadable": [list(p) for p in self.unreadable], "inputs": self.inputs,
                "sizes": {"candidates": _histogram(f.detection.avg_size for f in self.faces),
                          "kept": _histogram(f.detection.avg_size for f, r in zip(self.faces, reasons)
                                             if r is None)}}

    def _filter(self) -> list[str | None]:
        """Filter reasons per face: reader rejections first, the configured filters for the rest.

        Pre-cropped faces (the image is the face) skip the border check, which would always fire.
        Faces of paired items are not filtered (their crop rule is fixed).
        """
        reasons: list[str | None] = [f.reason for f in self.faces]
        groups = {False: self.cfg.filters, True: _without_border(self.cfg.filters)}
        for whole, fcfg in groups.items():
            idx = [i for i, f in enumerate(self.faces)
                   if f.reason is None and f.item.mode != "paired" and f.whole == whole]
            if not idx:
                continue
            faces = [self.faces[i] for i in idx]
            cands = [Candidate(f.item.source, f.item.frame, f.detection, f.image_size, f.crop) for f in faces]
            for i, r in zip(idx, filter_candidates(cands, fcfg)):
                reasons[i] = r
        return reasons

    def _write_face(self, fid: str, face: _Face) -> tuple[dict[str, Any], np.ndarray]:
        """Write the face's PNGs; returns its manifest row and its LR image (16x16 RGB uint8)."""
        b = self.cfg.build
        crop_rel, lr_rel = f"crops/{fid}.png", f"lr16/{fid}.png"
        digest = write_png(self.out / crop_rel, face.crop)
        if face.hr is not None:
            hr_rel = f"hr64/{fid}.png"
            write_png(self.out / hr_rel, face.hr)
            lr = face.lr if face.lr is not None else _downsample(face.hr, b.hr_size // b.lr_size)
        else:
            hr_rel, lr = "", _resize(face.crop, b.lr_size)
        write_png(self.out / lr_rel, lr)
        return {**_box_row(fid, face), "identity": face.identity, "split": face.item.split,
                "crop": crop_rel, "lr16": lr_rel, "hr64": hr_rel, "sha256": digest, **face.columns}, lr


def _without_border(cfg: FilterConfig) -> FilterConfig:
    import dataclasses

    return dataclasses.replace(cfg, border_margin=-math.inf)


def _is_video(item: Item) -> bool:
    from lrfacebench.data.sources.video import is_video

    return item.frame is not None and is_video(item.source)


def _padded_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The square of ``filters.crop_rect(box)`` at native resolution; parts outside the image are
    filled by edge replication (paired sets need square HR crops even at the border)."""
    x0, y0, x1, y1 = crop_rect(box)
    H, W = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    part = image[cy0:cy1, cx0:cx1]
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1), (0, 0))
    return np.pad(part, pad, mode="edge") if any(p for q in pad for p in q) else part.copy()


def _match_counts(found: Sequence[Detection], gt: np.ndarray, min_iou: float) -> dict[str, int]:
    """``n_gt``, ``n_det``, ``n_tp`` of detections against annotated boxes (greedy, IoU >= min_iou)."""
    det = np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4)
    return {"n_gt": len(gt), "n_det": len(det), "n_tp": len(match_greedy(det, gt, min_iou))}


def _tally(acc: Counter[str], r: dict[str, Any]) -> None:
    for k in ("n_gt", "n_det", "n_tp"):
        acc[k] += int(r[k])


def _box_row(fid: str, face: _Face) -> dict[str, Any]:
    x1, y1, x2, y2 = face.detection.box
    score = face.detection.score
    it = face.item
    return {"face_id": fid, "source": it.source, "frame": "" if it.frame is None else it.frame,
            "time_s": "" if it.time_s is None else it.time_s,
            "x1": round(x1, 2), "y1": round(y1, 2), "x2": round(x2, 2), "y2": round(y2, 2),
            "score": "" if math.isnan(score) else round(score, 4),
            "width": round(x2 - x1, 2), "height": round(y2 - y1, 2)}


def _histogram(sizes: Iterable[float]) -> dict[str, int]:
    """Sparse histogram of average face sizes in 1-px bins: ``{"12": n}`` counts sizes in [12, 13)."""
    h = Counter(str(int(s)) for s in sizes)
    return dict(sorted(h.items(), key=lambda kv: int(kv[0])))


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    c = Counter(a)
    c.update(b)
    return dict(sorted(c.items(), key=lambda kv: int(kv[0])))


def _to_tensor(rgb: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


def _to_rgb(t: Any) -> np.ndarray:
    from lrfacebench.degrade import to_uint8

    return to_uint8(t)[0].permute(1, 2, 0).numpy().copy()


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """``degrade.imresize`` (MATLAB bicubic, antialiased) of an RGB uint8 crop to size x size."""
    from lrfacebench.degrade import imresize

    return _to_rgb(imresize(_to_tensor(rgb), (size, size)))


def _downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``degrade.downsample`` (DS) of a quantised HR face, quantised again with ``to_uint8``."""
    from lrfacebench.degrade import downsample

    return _to_rgb(downsample(_to_tensor(rgb), factor))


# ---- merge ----------------------------------------------------------------------------------
def load_shards(out: Path, n_shards: int) -> list[dict[str, Any]]:
    return [json.loads(shard_path(out, i).read_text()) for i in range(n_shards)]


def done_shards(out: Path, n_shards: int, plan_hash: str) -> set[int]:
    """Indices of shards whose done-marker exists and belongs to this plan."""
    done = set()
    for i in range(n_shards):
        p = shard_path(out, i)
        if p.is_file():
            try:
                if json.loads(p.read_text()).get("plan_hash") == plan_hash:
                    done.add(i)
            except (OSError, json.JSONDecodeError):
                pass  # cannot happen with atomic writes; redo the shard if it does
    return done


# ---- exclusions -----------------------------------------------------------------------------
@dataclass
class Exclusions:
    """A reviewer's decisions: face ids, or (source, frame, box) matched by IoU >= ``min_iou``.

    Read from CSV files with a header holding ``face_id`` (or ``candidate``) and/or
    ``source,x1,y1,x2,y2`` (``frame`` optional) -- rows copied from ``manifest.csv`` or
    ``rejected.csv`` work as they are -- or from plain text files with one face id per line
    (``#`` starts a comment).
    """

    face_ids: set[str] = field(default_factory=set)
    boxes: list[tuple[str, str, tuple[float, float, float, float]]] = field(default_factory=list)
    min_iou: float = 0.5

    def __len__(self) -> int:
        return len(self.face_ids) + len(self.boxes)

    @classmethod
    def read(cls, paths: Iterable[Path]) -> tuple["Exclusions", list[Problem]]:
        ex, problems = cls(), []
        for path in paths:
            text = path.read_text(encoding="utf-8", errors="replace")
            first = text.lstrip().split("\n", 1)[0]
            if "," in first:
                ex._read_csv(path, text, problems)
            else:
                for line in text.splitlines():
                    line = line.split("#", 1)[0].strip()
                    if line and line not in ("face_id", "candidate"):
                        ex.face_ids.add(line)
        return ex, problems

    def _read_csv(self, path: Path, text: str, problems: list[Problem]) -> None:
        reader = csv.DictReader(_io.StringIO(text))
        cols = set(reader.fieldnames or ())
        id_col = "face_id" if "face_id" in cols else ("candidate" if "candidate" in cols else None)
        has_box = {"source", "x1", "y1", "x2", "y2"} <= cols
        if id_col is None and not has_box:
            problems.append(Problem(path.name, "1", "exclusion CSV needs face_id or source,x1,y1,x2,y2 columns"))
            return
        for n, row in enumerate(reader, 2):
            if id_col and (row.get(id_col) or "").strip():
                self.face_ids.add(row[id_col].strip())
                continue
            try:
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                frame = (row.get("frame") or "").strip()
                self.boxes.append((row["source"].strip(), frame, box))  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError) as e:
                problems.append(Problem(path.name, str(n), f"bad exclusion row: {e}"))

    def write(self, path: Path) -> None:
        rows = [{"face_id": f} for f in sorted(self.face_ids)]
        rows += [{"source": s, "frame": fr, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}
                 for s, fr, b in self.boxes]
        write_csv(path, ("face_id", "source", "frame", "x1", "y1", "x2", "y2"), rows)

    def union(self, other: "Exclusions") -> "Exclusions":
        boxes = self.boxes + [b for b in other.boxes if b not in self.boxes]
        return Exclusions(self.face_ids | other.face_ids, boxes, self.min_iou)

    def match(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Face ids of ``rows`` (manifest rows) that the exclusions name."""
        from lrfacebench.data.detect import box_iou

        hit = {r["face_id"] for r in rows if r["face_id"] in self.face_ids}
        by_src: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_src[(r["source"], str(r["frame"]))].append(r)
        for source, frame, box in self.boxes:
            for r in by_src.get((source, frame), []):
                other = np.array([[r["x1"], r["y1"], r["x2"], r["y2"]]], dtype=np.float64)
                if box_iou(np.array([box]), other)[0, 0] >= self.min_iou:
                    hit.add(r["face_id"])
        return hit


# ---- merge ----------------------------------------------------------------------------------
def window_duplicates(records: list[dict[str, Any]], fcfg: FilterConfig, window: int
                      ) -> dict[str, str]:
    """``{face_id: earlier face_id}`` for faces that near-duplicate a face of the ``window``
    preceding shards (the same face across video frames or repeated photos cut by a shard border).

    Each shard is compared with the faces its own filters kept in the previous shards (their
    16x16 LR images, stored in the shard records, so faces a previous merge deleted still count),
    and the answer depends only on shard outputs, never on scheduling. Duplicates inside a shard
    were already removed by the shard's filters; repeats further apart in the plan are not searched.
    """
    if not fcfg.dedupe or window < 1:
        return {}

    def thumbs(s: int) -> list[np.ndarray]:
        raw = [np.frombuffer(base64.b64decode(records[s]["thumbs"][r["face_id"]]), np.uint8)
               for r in records[s]["kept"]]
        return [a.reshape(math.isqrt(a.size // 3), -1, 3).copy() for a in raw]

    dups: dict[str, str] = {}
    for s in range(1, len(records)):
        if not records[s]["kept"]:
            continue
        prev = [r for p in range(max(0, s - window), s) for r in records[p]["kept"]]
        if not prev:
            continue
        ref = [c for p in range(max(0, s - window), s) for c in thumbs(p)]
        found = near_duplicates(ref + thumbs(s), fcfg)[len(ref):]
        for row, j in zip(records[s]["kept"], found):
            if j is not None and j < len(ref):
                dups[row["face_id"]] = prev[j]["face_id"]
    return dups


@dataclass
class MergeResult:
    """Outcome of :func:`merge`: the final manifest rows and stats, or shards to redo first."""

    manifest: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    redo: list[int] = field(default_factory=list)


def merge(out: Path, plan: Plan, cfg: BuildConfig, plan_hash: str, exclusions: Exclusions,
          extra_stats: dict[str, Any]) -> MergeResult:
    """Combine every done shard into the dataset files; ``manifest.csv`` is written last.

    Drops cross-shard near-duplicates (:func:`window_duplicates`) and excluded faces (their
    PNGs are deleted; they go to ``rejected.csv`` with reasons ``near_duplicate``/``excluded``).
    When a kept face's PNG is missing (deleted by hand, or un-excluded after a previous merge
    deleted it) nothing is written and the shards to rebuild are returned in ``redo``.
    """
    t0 = time.perf_counter()
    records = load_shards(out, plan.n_shards)
    dups = window_duplicates(records, cfg.filters, cfg.build.dedupe_window)
    kept_all = [r for rec in records for r in rec["kept"]]
    excluded = exclusions.match(kept_all)
    final = [r for r in kept_all if r["face_id"] not in dups and r["face_id"] not in excluded]
    redo = sorted({int(r["face_id"][1:6]) for r in final
                   if any(r[c] and not (out / r[c]).is_file() for c in ("crop", "lr16", "hr64"))})
    if redo:
        return MergeResult(redo=redo)
    merged_rejects = []
    for r in kept_all:
        fid = r["face_id"]
        if fid in dups or fid in excluded:
            for c in ("crop", "lr16", "hr64"):
                if r[c]:
                    (out / r[c]).unlink(missing_ok=True)
            reason, detail = (("near_duplicate", f"duplicates {dups[fid]}") if fid in dups
                              else ("excluded", "reviewer exclusion list"))
            merged_rejects.append({**r, "candidate": fid, "reason": reason, "crop": "", "detail": detail})
    rejected = sorted([r for rec in records for r in rec["rejected"]] + merged_rejects,
                      key=lambda r: r["candidate"])
    unreadable = list(plan.problems) + [Problem(*p) for rec in records for p in rec["unreadable"]]
    write_csv(out / "rejected.csv", REJECTED_COLUMNS, rejected)
    write_csv(out / "unreadable.csv", UNREADABLE_COLUMNS, unreadable)
    write_review(out, final, rejected, cfg.build)
    stats = build_stats(plan, cfg, plan_hash, records, final, rejected, unreadable, exclusions, extra_stats)
    stats["timings"]["merge_s"] = round(time.perf_counter() - t0, 3)
    write_json(out / "stats.json", stats)
    from lrfacebench.data.cards import write_card

    write_card(out)
    write_csv(out / "manifest.csv", manifest_columns(plan.source), final)
    return MergeResult(manifest=final, stats=stats)


def write_review(out: Path, kept: list[dict[str, Any]], rejected: list[dict[str, Any]],
                 b: BuildOptions) -> None:
    """Contact sheets for a human reviewer: ``review/kept_NNN.jpg`` (pages of ``review_faces``)
    and ``review/rejected_<reason>.jpg``; ``review/index.csv`` maps sheet cells to face ids."""
    import shutil

    from lrfacebench.data.review import contact_sheet

    shutil.rmtree(out / "review", ignore_errors=True)  # sheets of a previous merge
    index: list[tuple[str, int, str, str]] = []
    pages = [kept[i:i + b.review_faces] for i in range(0, len(kept), b.review_faces)][: b.review_sheets]
    for p, rows in enumerate(pages, 1):
        name = f"kept_{p:03d}.jpg"
        contact_sheet([read_rgb(out / r["crop"]) for r in rows], [_short(r["face_id"]) for r in rows],
                      out / "review" / name)
        index += [(name, k, r["face_id"], "") for k, r in enumerate(rows)]
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rejected:
        if r["crop"] and len(by_reason[r["reason"]]) < b.review_faces:
            by_reason[r["reason"]].append(r)
    for reason, rows in sorted(by_reason.items()):
        name = f"rejected_{reason}.jpg"
        contact_sheet([read_rgb(out / r["crop"]) for r in rows], [_short(r["candidate"]) for r in rows],
                      out / "review" / name)
        index += [(name, k, r["candidate"], reason) for k, r in enumerate(rows)]
    write_csv(out / "review" / "index.csv", ("sheet", "cell", "face_id", "reason"), index)


def _short(fid: str) -> str:
    """``s00003-000017`` -> ``3-17`` (sheet label)."""
    s, k = fid[1:].split("-")
    return f"{int(s)}-{int(k)}"


def build_stats(plan: Plan, cfg: BuildConfig, plan_hash: str, records: list[dict[str, Any]],
                final: list[dict[str, Any]], rejected: list[dict[str, Any]], unreadable: list[Problem],
                exclusions: Exclusions, extra: dict[str, Any]) -> dict[str, Any]:
    """``stats.json``: counts per stage, size histograms, detector evaluation, timings, config,
    versions and source hashes."""
    from lrfacebench.runtime import environment, resolve_device

    counts: Counter[str] = Counter()
    timings: Counter[str] = Counter()
    evals: dict[str, Counter[str]] = defaultdict(Counter)
    sizes: dict[str, dict[str, int]] = {"candidates": {}, "kept_in_shards": {}}
    inputs: dict[str, str] = {}
    for rec in records:
        counts.update(rec["stats"]["counts"])
        timings.update(rec["stats"]["timings"])
        for k, v in rec["stats"]["detector_eval"].items():
            evals[k].update(v)
        for k, src in (("candidates", "candidates"), ("kept_in_shards", "kept")):
            sizes[k] = _add(sizes[k], rec["sizes"][src])
        inputs.update(rec["inputs"])
    by_reason = Counter(r["reason"] for r in rejected)
    identities = Counter(r["identity"] for r in final if r["identity"])
    try:
        device = resolve_device(cfg.detector.device)
    except ValueError:
        device = None
    return {
        "dataset": cfg.name, "source": plan.source, "kind": plan.kind, "root": str(plan.root),
        "counts": {
            "items": len(plan.items), "items_read": counts["items"] - counts["items_unreadable"],
            "items_unreadable": counts["items_unreadable"], "annotation_problems": len(plan.problems),
            "unreadable_rows": len(unreadable), "candidates": counts["candidates"],
            "kept_in_shards": sum(len(rec["kept"]) for rec in records), "kept": len(final),
            "rejected": sum(by_reason.values()), "rejected_by_reason": dict(sorted(by_reason.items())),
            "identities": len(identities), "faces_with_identity": sum(identities.values()),
            "identities_with_2_faces": sum(1 for v in identities.values() if v >= 2),
            "splits": dict(sorted(Counter(r["split"] for r in final).items())),
            "sources_with_faces": len({r["source"] for r in final}),
        },
        "size_histogram": {"note": "faces per 1-px bin of the average size (w+h)/2 in px: key 12 = [12, 13)",
                           "kept": _histogram((float(r["width"]) + float(r["height"])) / 2 for r in final),
                           **sizes},
        "size_summary": _size_summary(final),
        "detector_eval": {k: _rates(v) for k, v in sorted(evals.items())},
        "timings": {**{k: round(v, 3) for k, v in sorted(timings.items())}, **extra.get("timings", {})},
        "config": cfglib.to_dict(cfg), "config_hash": cfg.compat_hash(), "plan_hash": plan_hash,
        "shards": plan.n_shards, "exclusions": len(exclusions),
        "environment": environment(device),
        "source_hashes": {
            "annotations": {(f.relative_to(plan.root).as_posix() if f.is_relative_to(plan.root) else str(f)):
                            sha256_file(f) for f in plan.files},
            "inputs_sha256": sha256_json(sorted(inputs.items())), "n_inputs_hashed": len(inputs),
        },
    }


def _size_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    if not rows:
        return {}
    s = np.array([(float(r["width"]) + float(r["height"])) / 2 for r in rows])
    return {"min": round(float(s.min()), 2), "median": round(float(np.median(s)), 2),
            "mean": round(float(s.mean()), 2), "max": round(float(s.max()), 2)}


def _rates(c: Counter[str]) -> dict[str, Any]:
    n_gt, n_det, n_tp = c["n_gt"], c["n_det"], c["n_tp"]
    return {"n_gt": n_gt, "n_det": n_det, "n_tp": n_tp,
            "recall": round(n_tp / n_gt, 4) if n_gt else None,
            "precision": round(n_tp / n_det, 4) if n_det else None}
