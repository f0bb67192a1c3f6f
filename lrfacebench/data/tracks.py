"""Face tracks in video: detections linked across consecutive sampled frames, used as
pseudo-identities, for a per-track cap and for near-duplicate search within a track.

The tracker is the detection-linking step of SORT-like trackers without their motion model:
each sampled frame's faces are assigned to the open tracks by ``scipy.optimize.
linear_sum_assignment`` on their centre distance, a pair being allowed when the boxes overlap
(IoU >= ``min_iou``) or their centres lie within ``max_shift`` face sizes per sampled step, and
their sizes differ by at most ``max_size_ratio``. It is written here (about 40 lines) because no
dependency of the project links detections: OpenCV's trackers follow one object by its pixels,
and torchvision has none; tracker packages (e.g. ByteTrack implementations) would add a
dependency, and their Kalman motion models need the frame rate's dense sampling, which tiny
faces sampled every few frames do not have.

Tracks are linked in the merge, from the boxes in every shard's records, so they are the same
however the frames were cut into shards (a track crosses shard borders) and however many jobs
ran them. A stream is one video file, or for numbered frame images (DukeMTMC's
``frames/camera{c}/``) their folder; its steps are its sampled frames in plan order, so a frame
that could not be decoded is a step without faces.

Boxes are ``(x1, y1, x2, y2)`` in frame pixels; sizes are the average of width and height.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from lrfacebench.data.detect import Box, box_iou
from lrfacebench.data.filters import FilterConfig, near_duplicates
from lrfacebench.data.sources.base import Item
from lrfacebench.data.sources.video import is_video

# candidates that take part in tracking: the kept faces and those rejected only by the size window or
# the border (real faces that the dataset leaves out), so a track goes on while a face grows past 16 px
TRACKED_REASONS = ("too_large", "too_small", "crop_too_large", "cut_by_border")
_FORBIDDEN = 1e9  # cost of a pair the gates rule out


@dataclass
class TrackConfig:
    """How faces are linked into tracks (the ``[tracks]`` table of a recipe).

    ``enabled``: link faces of video frames into tracks (``track_id`` in the manifest); near
    duplicates are then searched within each track (in time order) instead of among a shard's
    faces. ``min_iou``: boxes overlapping at least this much may link. ``max_shift``: or their
    centres lie at most this many face sizes apart per sampled step (raise it with the stride).
    ``max_size_ratio``: the larger face at most this many times the smaller one. ``max_gap``:
    a track survives this many sampled frames without a face (a missed detection). ``max_faces``:
    per-track cap on kept faces, evenly spaced over the track (first and last kept; 0 = no cap).
    ``identity_from_track``: a face without an identity from annotations takes
    ``track:<track_id>``.
    """

    enabled: bool = False
    min_iou: float = 0.3
    max_shift: float = 2.0
    max_size_ratio: float = 2.0
    max_gap: int = 1
    max_faces: int = 0
    identity_from_track: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_iou <= 1:
            raise ValueError(f"tracks.min_iou must be in [0, 1], got {self.min_iou}")
        if self.max_shift < 0 or self.max_size_ratio < 1:
            raise ValueError(f"tracks.max_shift must be >= 0 and tracks.max_size_ratio >= 1, got "
                             f"{self.max_shift} and {self.max_size_ratio}")
        if self.max_gap < 0 or self.max_faces < 0:
            raise ValueError(f"tracks.max_gap and tracks.max_faces must be >= 0, got {self.max_gap} and "
                             f"{self.max_faces}")


def link(steps: Sequence[Sequence[Box]], cfg: TrackConfig) -> list[list[int]]:
    """Track index (0, 1, ... in order of first appearance) of every box of every step.

    ``steps``: the boxes of each sampled frame of one stream, in time order. A box continues
    the open track that costs least (centre distance in face sizes, plus one per missed step)
    among those the gates allow, one box per track and step; the rest start new tracks.
    """
    last: list[tuple[int, Box]] = []  # per track: (step it was last seen, its box there)
    out: list[list[int]] = []
    for t, boxes in enumerate(steps):
        ids = [-1] * len(boxes)
        open_ = [k for k, (s, _) in enumerate(last) if t - s - 1 <= cfg.max_gap]
        if open_ and boxes:
            a = np.array([last[k][1] for k in open_], dtype=np.float64)  # (T,4)
            b = np.array(boxes, dtype=np.float64)  # (B,4)
            gap = np.array([t - last[k][0] - 1 for k in open_], dtype=np.float64)[:, None]  # (T,1)
            size_a, size_b = _sizes(a)[:, None], _sizes(b)[None]
            d = np.linalg.norm(_centres(a)[:, None] - _centres(b)[None], axis=-1) / ((size_a + size_b) / 2)
            allowed = ((d <= cfg.max_shift * (gap + 1)) | (box_iou(a, b) >= cfg.min_iou)) & (
                np.maximum(size_a, size_b) <= cfg.max_size_ratio * np.minimum(size_a, size_b))
            cost = np.where(allowed, d + gap, _FORBIDDEN)
            for i, j in zip(*linear_sum_assignment(cost)):
                if allowed[i, j]:
                    ids[j] = open_[i]
        for j, box in enumerate(boxes):
            if ids[j] < 0:
                ids[j] = len(last)
                last.append((t, box))
            else:
                last[ids[j]] = (t, box)
        out.append(ids)
    return out


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """(N,4) boxes -> (N,) average of width and height."""
    return (boxes[:, 2] - boxes[:, 0] + boxes[:, 3] - boxes[:, 1]) / 2


def _centres(boxes: np.ndarray) -> np.ndarray:
    """(N,4) boxes -> (N,2) centres."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def stream_of(item: Item) -> str:
    """The stream a frame item belongs to: its video file, or the folder of its frame images."""
    return item.source if is_video(item.source) else item.source.rpartition("/")[0]


def check_items(items: Sequence[Item]) -> None:
    """``ValueError`` when an item is no video frame (tracks link faces across frames only)."""
    photo = next((it for it in items if it.frame is None), None)
    if photo is not None:
        raise ValueError(f"tracks.enabled links faces across video frames, but {photo.source} is a photo "
                         "(no frame index); set tracks.enabled=false for this source")


def track_ids(items: Sequence[Item], rows: Sequence[dict[str, Any]], cfg: TrackConfig) -> dict[str, str]:
    """``{face_id: track_id}`` for the ``rows`` (kept faces and rejected candidates, as in shard
    records) that take part in tracking; ``track_id`` is ``<stream>#<n>``, ``n`` counting the
    stream's tracks from 0 in order of first appearance."""
    step_of: dict[tuple[str, int], tuple[str, int]] = {}
    n_steps: dict[str, int] = defaultdict(int)
    for it in items:
        if it.frame is not None:
            stream = stream_of(it)
            step_of[(it.source, it.frame)] = (stream, n_steps[stream])
            n_steps[stream] += 1
    faces: dict[str, list[list[dict[str, Any]]]] = {s: [[] for _ in range(n)] for s, n in n_steps.items()}
    for r in sorted(rows, key=lambda r: r["face_id"]):
        if r.get("reason") in (None, *TRACKED_REASONS) and r["frame"] != "":
            stream, step = step_of[(r["source"], int(r["frame"]))]
            faces[stream][step].append(r)
    out: dict[str, str] = {}
    for stream, steps in faces.items():
        boxes = [[(r["x1"], r["y1"], r["x2"], r["y2"]) for r in step] for step in steps]
        for step, ids in zip(steps, link(boxes, cfg)):
            for r, k in zip(step, ids):
                out[r["face_id"]] = f"{stream}#{k}"
    return out


def track_drops(kept: Sequence[dict[str, Any]], tracks: dict[str, str], thumbs: dict[str, np.ndarray],
                fcfg: FilterConfig, cfg: TrackConfig) -> dict[str, tuple[str, str]]:
    """``{face_id: (reason, detail)}`` for kept faces dropped within their track: near
    duplicates of an earlier face of the track (``filters.near_duplicates`` on the 16x16 LR
    ``thumbs``, when ``filters.dedupe``), then faces over the per-track cap (``track_cap``)."""
    by_track: dict[str, list[str]] = defaultdict(list)
    for r in sorted(kept, key=lambda r: (tracks[r["face_id"]], int(r["frame"]), r["face_id"])):
        by_track[tracks[r["face_id"]]].append(r["face_id"])
    drops: dict[str, tuple[str, str]] = {}
    for tid, fids in by_track.items():
        if fcfg.dedupe:
            dup = near_duplicates([thumbs[f] for f in fids], fcfg)
            for f, j in zip(fids, dup):
                if j is not None:
                    drops[f] = ("near_duplicate", f"duplicates {fids[j]} (track {tid})")
            fids = [f for f in fids if f not in drops]
        if cfg.max_faces and len(fids) > cfg.max_faces:
            keep = set(np.linspace(0, len(fids) - 1, cfg.max_faces).round().astype(int).tolist())
            for i, f in enumerate(fids):
                if i not in keep:
                    drops[f] = ("track_cap", f"track {tid} keeps {cfg.max_faces} of {len(fids)} faces")
    return drops
