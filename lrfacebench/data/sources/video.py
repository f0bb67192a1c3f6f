"""Any video file(s) readable by OpenCV (animated GIFs too) -> genuine LR faces from every
``stride``-th frame.

``--root`` is a video file or a folder searched recursively for videos. Each sampled frame is
one item whose ``frame`` (0-based index) and ``time_s`` (frame / fps, the nominal time) go to the
plan; the worker writes the decoder's presentation time of the frame to the manifest instead,
which differs only in variable-frame-rate files (GIFs with uneven frame delays, phone videos).
Frames that cannot be decoded (truncated or corrupt files, a frame count the container
overstates) are reported as ``(file, frame N, reason)`` and skipped; a file that cannot be
opened, has no decodable frame or frames over :data:`lrfacebench.io.MAX_IMAGE_PIXELS` is
reported as a whole. Rotated videos (a display-matrix rotation in the container, as phones
write) are decoded upright: OpenCV applies the rotation (``CAP_PROP_ORIENTATION_AUTO``).

``scale`` (0 < scale <= 1) shrinks every decoded frame by area averaging before detection, to
build DukeMTMC-like tiny faces (8-16 px) from footage whose faces are larger; boxes are then in
the pixels of the shrunk frame. Such faces are down-sampled after the camera's own blur and
compression, so they are partly artificial LR: the data card states the scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from lrfacebench.data.sources.base import Item, LayoutError, Problem, Scan, rel
from lrfacebench.io import MAX_IMAGE_PIXELS, UnreadableImage

KIND = "genuine"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".mts", ".m2ts", ".webm", ".mpg", ".mpeg",
                    ".wmv", ".flv", ".m4v", ".ts", ".gif")
SEEK_GAP = 64  # read forward instead of seeking when the next frame is at most this far ahead


@dataclass
class Options:
    stride: int = 30  # keep frames 0, stride, 2*stride, ... (about 1 per second at 30 fps)
    max_frames: int = 0  # per video; 0 = no limit
    scale: float = 1.0  # shrink each frame by this factor (area averaging) before detection
    split: str = ""

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"source.stride must be >= 1, got {self.stride}")
        if self.max_frames < 0:
            raise ValueError(f"source.max_frames must be >= 0 (0 = all), got {self.max_frames}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"source.scale must be in (0, 1] (the detector up-samples by itself), got {self.scale}")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def scan(root: Path, opts: Options) -> Scan:
    if root.is_file():
        videos, base = [root], root.parent
    elif root.is_dir():
        videos, base = sorted(p for p in root.rglob("*") if p.is_file() and is_video(p)), root
    else:
        raise LayoutError(f"video: {root} is neither a video file nor a folder")
    if not videos:
        raise LayoutError(f"video: no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}")
    out = Scan(root=base)
    for path in videos:
        source = rel(path, base)
        try:
            count, fps = probe(path)
        except UnreadableImage as e:
            out.problems.append(Problem(source, "", str(e)))
            continue
        frames = range(0, count, opts.stride)
        if opts.max_frames:
            frames = frames[: opts.max_frames]
        out.items.extend(Item(source=source, frame=f, time_s=round(f / fps, 3) if fps > 0 else None,
                              split=opts.split) for f in frames)
    return out


def probe(path: Path) -> tuple[int, float]:
    """(number of frames, frames per second); counts by decoding when the container does not say."""
    if path.stat().st_size == 0:
        raise UnreadableImage("zero-byte file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UnreadableImage("OpenCV cannot open this video")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w * h > MAX_IMAGE_PIXELS:
            raise UnreadableImage(f"video frames too large ({w}x{h} pixels)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if count <= 0:
            count = 0
            while cap.grab():
                count += 1
        if count == 0:
            raise UnreadableImage("video has no decodable frames")
        return count, fps
    finally:
        cap.release()


class Frame(NamedTuple):
    """A decoded frame: ``image`` RGB uint8 ``(H,W,3)`` (shrunk by the reader's scale) and
    ``time_s``, the decoder's presentation time in seconds (``None`` when it gives none)."""

    image: np.ndarray
    time_s: float | None


class FrameReader:
    """Reads frames of one video in increasing order; ``read(i)`` -> :class:`Frame`.

    ``scale`` (0 < scale <= 1) shrinks each frame by area averaging (``cv2.INTER_AREA``) to
    ``round(W*scale) x round(H*scale)`` (at least 1x1). ``fps`` is the container's nominal rate
    (0 when it states none). Raises :class:`UnreadableImage` for a frame that cannot be
    decoded; the reader recovers by seeking for the next request.
    """

    def __init__(self, path: Path, scale: float = 1.0) -> None:
        self.cap: Any = cv2.VideoCapture(str(path))
        self.scale = scale
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) if self.cap.isOpened() else 0.0
        self.pos = -1  # index of the next frame the decoder returns; -1 = unknown (seek first)

    def read(self, frame: int) -> Frame:
        if not self.cap.isOpened():
            raise UnreadableImage("OpenCV cannot open this video")
        if self.pos < 0 or frame < self.pos or frame - self.pos > SEEK_GAP:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
            self.pos = frame
        while self.pos < frame:
            if not self.cap.grab():
                self.pos = -1
                raise UnreadableImage(f"cannot decode frames before frame {frame}")
            self.pos += 1
        ok, bgr = self.cap.read()
        if not ok or bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
            self.pos = -1
            raise UnreadableImage("cannot decode frame")
        self.pos += 1
        msec = float(self.cap.get(cv2.CAP_PROP_POS_MSEC))
        if self.scale != 1.0:
            h, w = bgr.shape[:2]
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        return Frame(np.ascontiguousarray(bgr[..., ::-1]), round(msec / 1000, 3) if msec >= 0 else None)

    def off_rate(self, frame: int, time_s: float | None) -> bool:
        """Whether a frame decoded at ``time_s`` lies more than half a frame away from its
        nominal time ``frame / fps`` (a variable-frame-rate file)."""
        return time_s is not None and self.fps > 0 and abs(time_s - frame / self.fps) > 0.5 / self.fps

    def close(self) -> None:
        self.cap.release()
