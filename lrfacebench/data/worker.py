"""The shard worker of a build: reads a shard's items (photos, video frames, paired-set images),
detects faces, filters them, writes their PNGs and finally the shard's record
``shards/sNNNNN.json`` (atomically, last: its existence means "shard done").

A worker killed mid-shard leaves no record, so the shard is redone from scratch on restart and
rewrites the same files with the same bytes. Images are RGB ``uint8`` ``(H,W,3)``; boxes are
``(x1, y1, x2, y2)`` in original pixels.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lrfacebench import config as cfglib
from lrfacebench.data.annotated import COUNTS, MatchTally, evaluate_on_annotated
from lrfacebench.data.detect import Detection, DetectorConfig, bounded_scales, make_detector
from lrfacebench.data.filters import Candidate, crop_face, filter_candidates, padded_crop, quality_filter
from lrfacebench.data.plan import shard_path
from lrfacebench.data.recipe import BuildConfig
from lrfacebench.data.sources import rule as source_rule
from lrfacebench.data.sources.base import Annot, Item, LrRule, Problem, SceneRule, Shrunk, best_annot
from lrfacebench.data.sources.video import FrameReader, is_video
from lrfacebench.data.stats import histogram
from lrfacebench.io import UnreadableImage, read_rgb, sha256_file, sha256_json, write_json, write_png
from lrfacebench.pixels import downsample_rgb, resize_rgb

log = logging.getLogger(__name__)


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
    cfg = cfglib.from_dict(BuildConfig, job.config)
    worker = ShardWorker(cfg, Path(job.root), Path(job.out), job.index)
    record = worker.run([Item.from_json(d) for d in job.items], progress)
    record["plan_hash"] = job.plan_hash
    write_json(shard_path(Path(job.out), job.index), record)
    return {"shard": job.index, "items": len(job.items), "kept": len(record["kept"])}


@dataclass
class FaceRecord:
    """A candidate face of the shard (its box, crop and image size as the filters see it), the
    item it came from and what the worker knows of it; ``reason`` is set when already rejected."""

    item: Item
    candidate: Candidate
    identity: str
    whole: bool = False  # the image itself is the face (pre-cropped genuine-LR faces)
    reason: str | None = None
    hr: np.ndarray | None = None  # paired sets: the 64x64 HR face
    lr: np.ndarray | None = None  # paired sets with a source rule: the 16x16 LR face (else DS(hr))
    columns: dict[str, Any] = field(default_factory=dict)  # the source rule's extra manifest cells


class ShardWorker:
    """Reads, detects, filters and writes one shard; collects its records and stats."""

    def __init__(self, cfg: BuildConfig, root: Path, out: Path, index: int) -> None:
        self.cfg, self.root, self.out, self.index = cfg, root, out, index
        self.faces: list[FaceRecord] = []
        self.unreadable: list[Problem] = []
        self.inputs: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.timings: Counter[str] = Counter()
        self.evals: dict[str, Counter[str]] = defaultdict(Counter)
        self._video: tuple[str, Any] | None = None
        self._vfr: set[str] = set()  # videos whose variable frame rate was logged
        self.rule = source_rule(cfg.source.get("name", cfg.name))
        self.reader_options = cfg.reader_options()
        self._scenes: dict[str, tuple[np.ndarray, Shrunk]] = {}  # scene items: original photo, shrunk one
        self._scales: dict[tuple[str, int | None], tuple[float, ...]] = {}  # whole-image items: their scales

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
    def _load(self, item: Item) -> tuple[Item, np.ndarray]:
        """The item's image; a video frame's item gets the decoder's time of the frame."""
        if _is_video(item):
            return self._frame(item)
        path = self.root / item.source
        image = read_rgb(path)
        if item.source not in self.inputs:
            self.inputs[item.source] = sha256_file(path)
        return item, image

    def _frame(self, item: Item) -> tuple[Item, np.ndarray]:
        """A video frame (shrunk by ``source.scale``) and its item with ``time_s`` = the frame's
        timestamp; frames off the nominal rate are counted ``frames_vfr`` and logged once per
        video and shard."""
        assert item.frame is not None
        if self._video is None or self._video[0] != item.source:
            if self._video:
                self._video[1].close()
            self._video = (item.source, FrameReader(self.root / item.source, self.reader_options.scale))
        reader = self._video[1]
        frame = reader.read(item.frame)
        if frame.time_s is None:
            return item, frame.image
        if reader.off_rate(item.frame, frame.time_s):
            if item.source not in self._vfr:
                self._vfr.add(item.source)
                log.warning("%s: variable frame rate (frame %d decodes at %.3f s, not %.3f s at %g fps); times "
                            "come from the frames' timestamps", item.source, item.frame, frame.time_s,
                            item.frame / reader.fps, reader.fps)
            self.counts["frames_vfr"] += 1
        return dataclasses.replace(item, time_s=frame.time_s), frame.image

    def _valid_annots(self, item: Item, image: np.ndarray) -> tuple[Annot, ...]:
        """Annotations that overlap the image (a pre-cropped face, ``whole=1``, gets the image's
        bounds as its box); the others are reported as bad input."""
        h, w = image.shape[:2]
        keep = []
        for a in item.annots:
            if a.attr("whole") == 1:
                a = dataclasses.replace(a, box=(0.0, 0.0, float(w), float(h)))
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
                item, image = self._load(item)
            except UnreadableImage as e:
                self.counts["items_unreadable"] += 1
                self._problem(item, str(e))
                continue
            if item.mode == "scene" and (image := self._shrink(item, image)) is None:
                continue
            if item.mode in ("detect", "scene") and not self._plan_scales(item, image):
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

    def _plan_scales(self, item: Item, image: np.ndarray) -> tuple[float, ...]:
        """The scales the whole ``image`` is searched at (``detect.bounded_scales``: within
        ``detector.max_work_pixels``, reaching ``filters.min_avg_size`` first); a reduced set is
        counted and logged, an empty one (the photo is skipped) also reported as bad input."""
        h, w = image.shape[:2]
        d = self.cfg.detector
        scales = bounded_scales(w, h, d, self.cfg.filters.min_avg_size)
        key = (item.source, item.frame)
        if not scales:
            self.counts["items_too_large"] += 1
            self._problem(item, f"photo too large to search: {w}x{h} needs {w * h * min(d.scales) ** 2 / 1e6:.1f} M "
                                f"up-sampled pixels at scale {min(d.scales):g}, over "
                                f"detector.max_work_pixels = {d.max_work_pixels / 1e6:.1f} M")
            log.warning("skipping %s: %dx%d is over detector.max_work_pixels", item.source, w, h)
        elif scales != tuple(d.scales):
            self.counts["items_scales_reduced"] += 1
            log.warning("%s (%dx%d): searched at scales %s of %s (detector.max_work_pixels); faces below "
                        "%.1f px are not searched", item.source, w, h, scales, tuple(d.scales),
                        d.min_face_size / max(scales))
        self._scales[key] = scales
        return scales

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
        faces = (self.cfg.filters.min_avg_size, self.cfg.filters.max_avg_size)  # the size filter's window
        whole = [i for i, (it, _, _) in enumerate(loaded) if it.mode in ("detect", "scene")]
        if whole:
            # pyramid levels that only find faces the size filter drops are skipped
            found = _detector(self.cfg.detector).detect_many(
                [loaded[i][1] for i in whole],
                [self._scales[(loaded[i][0].source, loaded[i][0].frame)] for i in whole], *faces)
            for i, f in zip(whole, found):
                out[i] = f
        for i, (item, image, annots) in enumerate(loaded):
            if item.mode == "roi" and annots:
                out[i] = _detector(self.cfg.detector).detect(image, [a.roi or a.box for a in annots], *faces)
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
            candidate = Candidate(item.source, item.frame, det, (w, h), crop_face(image, det.box))
            self.faces.append(FaceRecord(item, candidate, owner.identity if owner else item.identity,
                                         is_whole, reason))

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
        crop = padded_crop(image, box)
        b = self.cfg.build
        hr = resize_rgb(crop, b.hr_size)
        lr, columns = (self.rule.make(hr, item, self.reader_options, b.lr_size) if isinstance(self.rule, LrRule)
                       else (None, {}))
        candidate = Candidate(item.source, item.frame, Detection(box, math.nan, None), (w, h), crop)
        self.faces.append(FaceRecord(item, candidate, item.identity, reason=None, hr=hr, lr=lr, columns=columns))

    def _shrink(self, item: Item, photo: np.ndarray) -> np.ndarray | None:
        """The source's :class:`SceneRule` shrinks ``photo`` (kept for the HR crops); ``None`` when
        the rule skips it or fails (reported in ``unreadable.csv``)."""
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
        with the same box cut from the original photo (HR, ``filters.padded_crop`` resized to hr_size);
        LR = the crop resized to lr_size (the genuine-LR rule). A face smaller than the rule's
        ``min_hr`` in the original is rejected as ``hr_too_small``."""
        photo, shrunk = self._scenes.pop(item.source)
        b = self.cfg.build
        sx, sy = shrunk.scale
        first = len(self.faces)
        self._candidates(item, small, (), found)
        for face in self.faces[first:]:
            x1, y1, x2, y2 = face.candidate.detection.box
            box = (x1 / sx, y1 / sy, x2 / sx, y2 / sy)
            size = (box[2] - box[0] + box[3] - box[1]) / 2
            face.hr = resize_rgb(padded_crop(photo, box), b.hr_size)
            face.lr = resize_rgb(face.candidate.crop, b.lr_size)
            face.columns = {**shrunk.values, **dict(zip(("hr_x1", "hr_y1", "hr_x2", "hr_y2"),
                                                        (round(v, 2) for v in box))), "hr_size": round(size, 2)}
            if face.reason is None and size < shrunk.min_hr:
                face.reason = "hr_too_small"

    def _evaluate(self, image: np.ndarray, annots: tuple[Annot, ...], found: list[Detection]) -> None:
        """Detector recall/precision on the item's annotated faces: at native size (this build's
        detections), then on copies shrunk so the faces average each ``eval_face_sizes`` px, before
        and after the quality filters (``filters.quality_filter``: all but size and duplicates)."""
        b = self.cfg.build
        gt = np.array([a.box for a in annots if a.is_face], dtype=np.float64)
        native = MatchTally()
        native.add(0, image, found, gt, b.eval_min_iou)
        self.evals["native/detector"].update(native.counts())
        dcfg = dataclasses.replace(self.cfg.detector, scales=b.eval_scales) if b.eval_scales else self.cfg.detector
        for size in b.eval_face_sizes:
            r = evaluate_on_annotated(_detector(dcfg), [image], [gt], float(size), b.eval_min_iou,
                                      verify=quality_filter(self.cfg.filters))
            self.evals[f"{size:g}px/detector"].update({k: r["raw"][k] for k in COUNTS})
            self.evals[f"{size:g}px/detector+filters"].update({k: r[k] for k in COUNTS})

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
                write_png(self.out / crop, face.candidate.crop)
            rejected.append({**_box_row(fid, face), "candidate": fid, "reason": reason, "crop": crop,
                             "detail": ""})
        self.counts["kept"] += len(kept)
        self.timings["write_s"] += time.perf_counter() - t
        return {"shard": self.index, "kept": kept, "rejected": rejected, "thumbs": thumbs,
                "unreadable": [list(p) for p in self.unreadable], "inputs": self.inputs,
                "sizes": {"candidates": histogram(f.candidate.detection.avg_size for f in self.faces),
                          "kept": histogram(f.candidate.detection.avg_size for f, r in zip(self.faces, reasons)
                                            if r is None)}}

    def _filter(self) -> list[str | None]:
        """Filter reasons per face: reader rejections first, the configured filters for the rest.

        Pre-cropped faces (the image is the face) skip the border check, which would always fire.
        Faces of paired items are not filtered (their crop rule is fixed). With tracks, near
        duplicates are left to the merge (:func:`lrfacebench.data.tracks.track_drops`).
        """
        reasons: list[str | None] = [f.reason for f in self.faces]
        base = dataclasses.replace(self.cfg.filters, dedupe=False) if self.cfg.tracks.enabled else self.cfg.filters
        groups = {False: base, True: dataclasses.replace(base, border_margin=-math.inf)}
        for whole, fcfg in groups.items():
            idx = [i for i, f in enumerate(self.faces)
                   if f.reason is None and f.item.mode != "paired" and f.whole == whole]
            if not idx:
                continue
            for i, r in zip(idx, filter_candidates([self.faces[i].candidate for i in idx], fcfg)):
                reasons[i] = r
        return reasons

    def _write_face(self, fid: str, face: FaceRecord) -> tuple[dict[str, Any], np.ndarray]:
        """Write the face's PNGs; returns its manifest row and its LR image (16x16 RGB uint8)."""
        b = self.cfg.build
        crop_rel, lr_rel = f"crops/{fid}.png", f"lr16/{fid}.png"
        digest = write_png(self.out / crop_rel, face.candidate.crop)
        if face.hr is not None:
            hr_rel = f"hr64/{fid}.png"
            write_png(self.out / hr_rel, face.hr)
            lr = face.lr if face.lr is not None else downsample_rgb(face.hr, b.hr_size // b.lr_size)
        else:
            hr_rel, lr = "", resize_rgb(face.candidate.crop, b.lr_size)
        write_png(self.out / lr_rel, lr)
        return {**_box_row(fid, face), "identity": face.identity, "split": face.item.split,
                "crop": crop_rel, "lr16": lr_rel, "hr64": hr_rel, "sha256": digest, **face.columns}, lr


def _is_video(item: Item) -> bool:
    return item.frame is not None and is_video(item.source)


def _box_row(fid: str, face: FaceRecord) -> dict[str, Any]:
    """The manifest cells of a face's box: where it is, its size and its detection score."""
    x1, y1, x2, y2 = face.candidate.detection.box
    score = face.candidate.detection.score
    it = face.item
    return {"face_id": fid, "source": it.source, "frame": "" if it.frame is None else it.frame,
            "time_s": "" if it.time_s is None else it.time_s,
            "x1": round(x1, 2), "y1": round(y1, 2), "x2": round(x2, 2), "y2": round(y2, 2),
            "score": "" if math.isnan(score) else round(score, 4),
            "width": round(x2 - x1, 2), "height": round(y2 - y1, 2)}
