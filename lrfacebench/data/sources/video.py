"""Any video file(s) readable by OpenCV -> genuine LR faces from every ``stride``-th frame.

``--root`` is a video file or a folder searched recursively for videos. Each sampled frame is
one item whose ``frame`` (0-based index) and ``time_s`` (frame / fps) go to the manifest.
Frames that cannot be decoded (truncated or corrupt files, a frame count the container
overstates) are reported as ``(file, frame N, reason)`` and skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lrfacebench.data.sources.base import Item, LayoutError, Problem, Scan, rel
from lrfacebench.io import UnreadableImage

KIND = "genuine"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".mts", ".m2ts", ".webm", ".mpg", ".mpeg",
                    ".wmv", ".flv", ".m4v", ".ts")
SEEK_GAP = 64  # read forward instead of seeking when the next frame is at most this far ahead


@dataclass
class Options:
    stride: int = 30  # keep frames 0, stride, 2*stride, ... (about 1 per second at 30 fps)
    max_frames: int = 0  # per video; 0 = no limit
    split: str = ""


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def scan(root: Path, opts: Options) -> Scan:
    if opts.stride < 1:
        raise ValueError(f"stride must be >= 1, got {opts.stride}")
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
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UnreadableImage("OpenCV cannot open this video")
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


class FrameReader:
    """Reads frames of one video in increasing order; ``read(i)`` -> RGB uint8 ``(H,W,3)``.

    Raises :class:`UnreadableImage` for a frame that cannot be decoded; the reader recovers
    by seeking for the next request.
    """

    def __init__(self, path: Path) -> None:
        self._cv2 = cv2
        self.cap: Any = cv2.VideoCapture(str(path))
        self.pos = -1  # index of the next frame the decoder returns; -1 = unknown (seek first)

    def read(self, frame: int) -> np.ndarray:
        cv2 = self._cv2
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
        if not ok or bgr is None:
            self.pos = -1
            raise UnreadableImage("cannot decode frame")
        self.pos += 1
        return np.ascontiguousarray(bgr[..., ::-1])

    def close(self) -> None:
        self.cap.release()
