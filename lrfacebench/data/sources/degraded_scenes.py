"""Whole photos -> paired faces: LR found by the detector in a shrunk, JPEG-stored copy of the photo,
HR = the same box cut from the original photo.

A separate source rather than a mode of ``degraded``: its inputs are photos, not face crops, and
its LR faces come out of the builder's genuine-LR path (detection, then the recipe's filters) run
on a shrunk photo, where ``degraded`` degrades known face crops without any detection. The two
share only the resampling and JPEG helpers of :mod:`lrfacebench.data.degradations`.

Per photo, from ``numpy.random.default_rng(derive_seed(seed, "degraded_scenes", path))``: a
target face size uniform in ``face_size`` px and a JPEG quality in ``jpeg_quality``. The shrink
factor is target / the median average size of the faces the detector finds at native scale
(score >= ``min_native_score``, size >= ``min_hr_size``), or the fixed ``shrink`` when it is
> 0. The photo is resized by that factor (``degrade.imresize``, bicubic, antialiased), stored as
JPEG, then searched whole by the recipe's detector; its faces pass the recipe's filters like any
genuine-LR face (LR = the crop resized to 16x16). Each face's box, scaled back to the original
photo, gives the HR: the square of ``filters.crop_rect``, edge-replicated outside the photo,
resized to 64x64. Faces below ``min_hr_size`` px in the original are rejected (``hr_too_small``).

Layout: any tree of photos (``--root``; e.g. ``lrfacebench/sample/scenes``); a first folder named
``train``, ``val`` or ``test`` gives the split, else ``default_split``. Faces have no identity.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lrfacebench.data import degradations
from lrfacebench.data.sources.base import Item, LayoutError, Scan, SceneRule, Shrunk, images_under, rel, split_dir
from lrfacebench.runtime import derive_seed

KIND = "paired"


@dataclass
class Options:
    seed: int = 0  # target face size and JPEG quality per photo = f(seed, photo path)
    face_size: tuple[float, float] = (8.0, 16.0)  # px: average face size after shrinking
    shrink: float = 0.0  # > 0: this factor for every photo instead of one sized by native detection
    min_native_score: float = 0.9  # native-scale detections that size the shrink
    min_hr_size: float = 32.0  # px in the original photo: smaller faces make no meaningful HR
    jpeg_quality: tuple[int, int] = (30, 95)
    default_split: str = "test"

    def __post_init__(self) -> None:
        if not 0 < self.face_size[0] <= self.face_size[1]:
            raise ValueError(f"face_size must be 0 < lo <= hi, got {self.face_size}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        if not 0 <= self.shrink < 1:
            raise ValueError(f"shrink must be 0 (size by detection) or a factor in (0, 1), got {self.shrink}")


def scan(root: Path, opts: Options) -> Scan:
    if not root.is_dir():
        raise LayoutError(f"degraded_scenes: {root} is not a folder of photos")
    images = images_under(root, "degraded_scenes")
    out = Scan()
    for p in images:
        source = rel(p, root)
        out.items.append(Item(source=source, mode="scene", split=split_dir(source) or opts.default_split))
    return out


def shrink(photo: np.ndarray, item: Item, opts: Options,
           detect_native: Callable[[np.ndarray], list[Any]]) -> Shrunk | str:
    """The shrunk, JPEG-stored copy of RGB uint8 ``photo`` ``(H,W,3)``, or why it is skipped."""
    rng = np.random.default_rng(derive_seed(opts.seed, "degraded_scenes", item.source))
    target = round(float(rng.uniform(*opts.face_size)), 3)
    quality = int(rng.integers(opts.jpeg_quality[0], opts.jpeg_quality[1] + 1))
    native: float | str = ""
    factor = opts.shrink
    if factor == 0:
        sizes = [d.avg_size for d in detect_native(photo)
                 if d.score >= opts.min_native_score and d.avg_size >= opts.min_hr_size]
        if not sizes:
            return f"skipped: no face of >= {opts.min_hr_size:g} px found at native scale"
        native = round(statistics.median(sizes), 2)
        factor = target / native
    H, W = photo.shape[:2]
    h, w = max(1, round(H * factor)), max(1, round(W * factor))
    small = degradations.jpeg(degradations.resize(photo, (h, w)), quality)
    values = {"shrink": round(factor, 5), "native_face_size": native, "target_face_size": target,
              "jpeg_quality": quality}
    return Shrunk(small, (w / W, h / H), values, opts.min_hr_size)


RULE = SceneRule(
    shrink=shrink,
    columns={"shrink": "factor the photo was shrunk by before detection",
             "native_face_size": "median face size (px) found at native scale that sized the shrink "
                                 "(empty: fixed shrink)",
             "target_face_size": "face size (px) the shrink aimed at",
             "jpeg_quality": "JPEG quality the shrunk photo was stored at",
             "hr_x1": "HR box in original photo pixels (hr_x1, hr_y1, hr_x2, hr_y2; the square of "
                      "filters.crop_rect of it is hr64)",
             "hr_y1": "see hr_x1", "hr_x2": "see hr_x1", "hr_y2": "see hr_x1",
             "hr_size": "average face size (px) in the original photo"},
    text="each photo shrunk so its faces average a random 8-16 px (`source.face_size`, sized by a native-scale "
         "detection), stored as JPEG, searched by the detector below and filtered like genuine LR (LR = the crop "
         "resized to 16x16); HR = the face's box scaled back to the original photo, square crop, resized to "
         "64x64; faces under `source.min_hr_size` px in the original are rejected (`hr_too_small`).",
)
