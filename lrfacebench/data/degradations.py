"""A seeded real-world degradation chain at the 16x16 scale: HR face ``(64,64,3)`` uint8 ->
LR face ``(16,16,3)`` uint8 that is *not* ``DS(HR)``.

One *pass* is blur -> resize -> noise -> JPEG (Real-ESRGAN's first-order model, Wang et al.,
ICCVW 2021); a face gets one pass, or two with probability ``second_prob`` (its second-order
idea); with probability ``shuffle_prob`` a pass draws its blur, resize and noise in a random order
(BSRGAN's shuffled degradations, Zhang et al., ICCV 2021; JPEG, the storage step, stays last).

- **blur**: isotropic or anisotropic (rotated) Gaussian, or a linear motion blur. Sigmas and
  motion lengths are stated in pixels of the 64-px HR face and scaled to the size of the image
  they are applied to (a blur after the resize is the same blur of the face).
- **resize**: the face is brought to a random *source size* of 8-24 px (``degrade.imresize``,
  bicubic or bilinear), as if it had been that small in a photo; after the last pass it is brought
  to 16x16 with the project's one rule, ``degrade.imresize`` bicubic (what ``lrfb build-dataset``
  does to every genuine-LR crop).
- **noise**: Gaussian (sigma in 0-255 units) or Poisson (Real-ESRGAN's shot noise: counts at
  ``2**ceil(log2(levels))`` levels, times a scale), in colour or grey, then clipped to [0, 1].
- **jpeg**: PIL JPEG (4:2:0 chroma) at a random quality, at the pass's source size.

:func:`sample` draws a face's parameters from a :class:`Chain` of ranges with a numpy
``Generator``; :func:`apply` is a pure function of (HR, parameters) -- the noise carries its own
seed -- so the parameters stored in a manifest reproduce the LR exactly. :func:`resize` and
:func:`jpeg` are the chain's resampling and JPEG steps on whole RGB uint8 images (used by the
``degraded_scenes`` source on photos).
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lrfacebench.degrade import imresize, to_uint8

BLUR_KINDS = ("iso", "aniso", "motion")
RESIZE_KERNELS = ("bicubic", "bilinear")
STEPS = ("blur", "resize", "noise")  # the shuffled steps; "jpeg" ends every pass
HR_REF = 64  # blur sizes are in pixels of a face this large
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class Pass:
    """Ranges of one pass; ``(lo, hi)`` pairs are drawn uniformly, sizes and qualities as integers.

    ``sigma``, ``motion_length``: px of the 64-px HR face. ``source_size``: px. ``gaussian_sigma``:
    0-255 units. ``poisson_scale``: multiplier of the shot noise. ``*_prob``: chance the step (or
    variant) happens; ``blur_kind_probs`` weight ``BLUR_KINDS``.
    """

    blur_prob: float = 1.0
    blur_kind_probs: tuple[float, float, float] = (0.45, 0.35, 0.2)
    sigma: tuple[float, float] = (0.2, 3.0)
    motion_length: tuple[float, float] = (3.0, 11.0)
    source_size: tuple[int, int] = (8, 24)
    resize_kernels: tuple[str, ...] = RESIZE_KERNELS
    noise_prob: float = 1.0
    poisson_prob: float = 0.5
    gray_noise_prob: float = 0.4
    gaussian_sigma: tuple[float, float] = (1.0, 15.0)
    poisson_scale: tuple[float, float] = (0.05, 1.5)
    jpeg_prob: float = 1.0
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        for name in ("blur_prob", "noise_prob", "poisson_prob", "gray_noise_prob", "jpeg_prob"):
            _check_prob(name, getattr(self, name))
        for name in ("sigma", "motion_length", "source_size", "gaussian_sigma", "poisson_scale", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"degradation range {name} must be 0 <= lo <= hi, got {(lo, hi)}")
        if len(self.blur_kind_probs) != len(BLUR_KINDS) or min(self.blur_kind_probs) < 0 \
                or sum(self.blur_kind_probs) <= 0:
            raise ValueError(f"blur_kind_probs must be {len(BLUR_KINDS)} weights >= 0 for {BLUR_KINDS}, "
                             f"got {self.blur_kind_probs}")
        if self.source_size[0] < 2:
            raise ValueError(f"source_size must be >= 2 px, got {self.source_size}")
        if not self.resize_kernels or set(self.resize_kernels) - set(RESIZE_KERNELS):
            raise ValueError(f"resize_kernels must be among {RESIZE_KERNELS}, got {self.resize_kernels}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")


@dataclass
class Chain:
    """The whole chain: ``first`` pass always, ``second`` with probability ``second_prob``; each
    pass shuffles blur/resize/noise with probability ``shuffle_prob``."""

    first: Pass = field(default_factory=Pass)
    second: Pass = field(default_factory=lambda: Pass(
        blur_prob=0.8, sigma=(0.2, 1.5), gaussian_sigma=(1.0, 12.5), poisson_scale=(0.05, 1.25)))
    second_prob: float = 0.5
    shuffle_prob: float = 0.3

    def __post_init__(self) -> None:
        _check_prob("second_prob", self.second_prob)
        _check_prob("shuffle_prob", self.shuffle_prob)


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"degradation {name} must lie in [0, 1], got {p}")


# ---- parameters ------------------------------------------------------------------------------
def sample(rng: np.random.Generator, chain: Chain) -> dict[str, Any]:
    """One face's parameters, ``{"passes": [pass, ...]}`` (JSON-ready, floats rounded to what
    :func:`apply` uses). A pass is ``{"order": [...], "blur": {...}, "resize": {...},
    "noise": {...}, "jpeg": {...}}`` with the steps that did not happen left out."""
    passes = [_sample_pass(rng, chain.first, chain.shuffle_prob)]
    if rng.random() < chain.second_prob:
        passes.append(_sample_pass(rng, chain.second, chain.shuffle_prob))
    return {"passes": passes}


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float], digits: int = 3) -> float:
    return round(float(rng.uniform(*lo_hi)), digits)


def _sample_pass(rng: np.random.Generator, p: Pass, shuffle_prob: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rng.random() < p.blur_prob:
        w = np.asarray(p.blur_kind_probs, dtype=np.float64)
        kind = BLUR_KINDS[int(rng.choice(len(BLUR_KINDS), p=w / w.sum()))]
        turn = (-math.pi, math.pi)
        if kind == "iso":
            blur: dict[str, Any] = {"sigma": _uniform(rng, p.sigma)}
        elif kind == "aniso":
            blur = {"sigma": [_uniform(rng, p.sigma), _uniform(rng, p.sigma)], "angle": _uniform(rng, turn)}
        else:
            blur = {"length": _uniform(rng, p.motion_length), "angle": _uniform(rng, turn)}
        out["blur"] = {"kind": kind, **blur}
    out["resize"] = {"size": int(rng.integers(p.source_size[0], p.source_size[1] + 1)),
                     "kernel": p.resize_kernels[int(rng.integers(len(p.resize_kernels)))]}
    if rng.random() < p.noise_prob:
        poisson, gray = rng.random() < p.poisson_prob, rng.random() < p.gray_noise_prob
        level = ({"kind": "poisson", "scale": _uniform(rng, p.poisson_scale)} if poisson
                 else {"kind": "gaussian", "sigma": _uniform(rng, p.gaussian_sigma, 2)})
        out["noise"] = {**level, "gray": bool(gray), "seed": int(rng.integers(2**31))}
    if rng.random() < p.jpeg_prob:
        out["jpeg"] = {"quality": int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1))}
    order = [s for s in STEPS if s in out]
    if rng.random() < shuffle_prob:
        order = [order[i] for i in rng.permutation(len(order))]
    return {"order": order + (["jpeg"] if "jpeg" in out else []), **out}


def to_json(params: dict[str, Any]) -> str:
    """Compact JSON of :func:`sample`'s parameters (the manifest's ``degradation`` cell)."""
    return json.dumps(params, separators=(",", ":"))


# ---- the chain -------------------------------------------------------------------------------
def apply(hr: np.ndarray, params: dict[str, Any], size: int = 16) -> np.ndarray:
    """Degrade RGB uint8 ``hr`` ``(H,W,3)`` (a square face, 64x64 in the recipes) with ``params``
    (:func:`sample`) into the RGB uint8 LR ``(size,size,3)``. Deterministic."""
    x = hr.astype(np.float64) / 255.0
    for p in params["passes"]:
        for step in p["order"]:
            if step == "blur":
                x = _convolve(x, _kernel(p["blur"], x.shape[0] / HR_REF))
            elif step == "resize":
                x = _resize(x, p["resize"]["size"], p["resize"]["kernel"])
            elif step == "noise":
                x = np.clip(x + _noise(x, p["noise"]), 0.0, 1.0)
            else:
                x = _jpeg(x, p["jpeg"]["quality"])
    return _quantise(_resize(x, size, "bicubic"))


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _quantise(x: np.ndarray) -> np.ndarray:
    """``[0,1]`` float ``(H,W,3)`` -> uint8 with ``degrade.to_uint8`` (round, clamp)."""
    return to_uint8(_chw(x))[0].permute(1, 2, 0).numpy().copy()


def _resize(x: np.ndarray, size: int, kernel: str) -> np.ndarray:
    """``degrade.imresize`` of float ``(H,W,3)`` to ``(size,size,3)``."""
    return _hwc(imresize(_chw(x), (size, size), kernel))  # type: ignore[arg-type]


def _kernel(blur: dict[str, Any], scale: float) -> np.ndarray:
    """Normalised 2-D blur kernel ``(k,k)``, k odd, for an image ``scale`` x the HR reference size."""
    if blur["kind"] == "motion":
        return _motion_kernel(blur["length"] * scale, blur["angle"])
    sx, sy = (blur["sigma"], blur["sigma"]) if blur["kind"] == "iso" else blur["sigma"]
    sx, sy = max(sx * scale, 1e-3), max(sy * scale, 1e-3)
    c, s = math.cos(blur.get("angle", 0.0)), math.sin(blur.get("angle", 0.0))
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sx * sx, sy * sy]) @ rot.T)
    r = max(1, math.ceil(3 * max(sx, sy)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    q = inv[0, 0] * xx * xx + 2 * inv[0, 1] * xx * yy + inv[1, 1] * yy * yy
    k = np.exp(-0.5 * q)
    return k / k.sum()


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    """A straight line of ``length`` px through the centre at ``angle``, splatted bilinearly."""
    r = max(1, math.ceil(length / 2))
    t = np.linspace(-length / 2, length / 2, max(2, math.ceil(4 * length) + 1))
    xs, ys = r + t * math.cos(angle), r + t * math.sin(angle)
    k = np.zeros((2 * r + 1, 2 * r + 1))
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = np.clip(x0 + dx, 0, 2 * r), np.clip(y0 + dy, 0, 2 * r)
        np.add.at(k, (yi, xi), w)
    return k / k.sum()


def _convolve(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per-channel 2-D convolution of ``(H,W,3)`` with ``k``, mirrored borders (kernel cut to the image)."""
    r = min(k.shape[0] // 2, min(x.shape[:2]) - 1)
    if r < 1:
        return x
    c = k.shape[0] // 2
    k = k[c - r:c + r + 1, c - r:c + r + 1]
    k = k / k.sum()
    t = F.pad(_chw(x), (r, r, r, r), mode="reflect")
    w = torch.from_numpy(np.ascontiguousarray(k[::-1, ::-1]))[None, None].repeat(3, 1, 1, 1)
    return _hwc(F.conv2d(t, w, groups=3))


def _noise(x: np.ndarray, n: dict[str, Any]) -> np.ndarray:
    """Additive noise for ``x`` ``(H,W,3)`` in [0,1], from the parameters' own seed."""
    rng = np.random.default_rng(n["seed"])
    if n["kind"] == "gaussian":
        shape = x.shape[:2] + ((1,) if n["gray"] else (3,))
        return np.broadcast_to(rng.normal(0.0, n["sigma"] / 255.0, shape), x.shape)
    img = np.round(np.clip(x, 0, 1) * 255.0) / 255.0  # Real-ESRGAN: shot noise of the quantised image
    if n["gray"]:
        img = (img @ _LUMA)[..., None]
    levels = 2.0 ** math.ceil(math.log2(max(2, len(np.unique(img)))))
    noise = rng.poisson(img * levels) / levels - img
    return np.broadcast_to(noise * n["scale"], x.shape)


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """:func:`jpeg` of float ``(H,W,3)`` in [0,1], quantised first; back in [0,1]."""
    return jpeg(_quantise(x), quality).astype(np.float64) / 255.0


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """PIL JPEG round trip (quality 1-100, 4:2:0 chroma) of RGB uint8 ``(H,W,3)`` -> RGB uint8."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``degrade.imresize`` (bicubic, antialiased) of RGB uint8 ``(H,W,3)`` to ``size=(h,w)``, uint8."""
    return _quantise(_hwc(imresize(_chw(rgb.astype(np.float64) / 255.0), size)))
