"""PSNR and SSIM of super-resolved faces against HR (Table 3), with BasicSR/MATLAB conventions.

- Inputs are RGB ``uint8`` images ``(H,W,3)``: SR outputs are quantised (PNG files, or
  :func:`lrfacebench.degrade.to_uint8` via :func:`measure_tensors`) before measuring.
- ``crop_border`` pixels are removed on every side first (default 0; Table 3's secondary
  protocol uses 4). All maths in float64.
- Y channel (primary): ITU-R BT.601 as MATLAB ``rgb2ycbcr`` on double input,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in [0,255], kept unrounded
  (BasicSR ``test_y_channel``). RGB (secondary): all three channels.
- PSNR ``= 10 log10(255^2 / MSE)``, MSE over all pixels (and channels); ``inf`` when identical
  (scikit-image's ``peak_signal_noise_ratio`` with ``data_range=255``).
- SSIM (Wang et al. 2004): Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  statistics only where the window lies inside the image ("valid"), mean of the SSIM map; for
  RGB the mean over channels: scikit-image's ``structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255)``, which equals BasicSR's ``calculate_ssim``.
- Over a set, each metric is the mean (and std) of the per-image values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lrfacebench import io
from lrfacebench.pixels import tensor_to_rgb

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
_WINDOW, _SIGMA = 11, 1.5


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image ``(H,W,3)`` in [0,255] -> ``(H,W)`` float64 in [16,235]."""
    return 16.0 + img.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two equally shaped arrays in [0,255]; ``inf`` when they are identical."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return math.inf if np.array_equal(a, b) else float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two single-channel ``(H,W)`` images in [0,255] (H, W >= 11)."""
    if min(a.shape) < _WINDOW:
        raise ValueError(f"SSIM needs images of at least {_WINDOW}x{_WINDOW}, got {a.shape}")
    return float(structural_similarity(a.astype(np.float64), b.astype(np.float64), gaussian_weights=True,
                                       sigma=_SIGMA, use_sample_covariance=False, data_range=255))


def measure(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> dict[str, float]:
    """``psnr_y, ssim_y, psnr_rgb, ssim_rgb`` of one RGB uint8 ``(H,W,3)`` pair.

    Raises ``TypeError`` for non-uint8 input (quantise first) and ``ValueError`` for shape
    mismatches or images too small for the border crop and the SSIM window.
    """
    for name, img in (("sr", sr), ("hr", hr)):
        if img.dtype != np.uint8:
            raise TypeError(f"{name} must be uint8 (quantise SR output before measuring), got {img.dtype}")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name} must be an RGB (H,W,3) image, got shape {img.shape}")
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: sr {sr.shape} vs hr {hr.shape}")
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    return {"psnr_y": psnr(y_sr, y_hr), "ssim_y": ssim(y_sr, y_hr),
            "psnr_rgb": psnr(sr, hr),
            "ssim_rgb": float(np.mean([ssim(sr[..., c], hr[..., c]) for c in range(3)]))}


@dataclass(frozen=True)
class PSNRSSIMResult:
    """Per-image values and their mean/std over a set of SR/HR pairs."""

    per_image: list[dict]  # {"name", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    crop_border: int

    @property
    def n_images(self) -> int:
        return len(self.per_image)

    def mean(self, metric: str) -> float:
        return float(np.mean([r[metric] for r in self.per_image]))

    def std(self, metric: str) -> float:
        return float(np.std([r[metric] for r in self.per_image]))

    def protocol(self, metric: str) -> str:
        channel = "y;bt601" if metric.endswith("_y") else "rgb"
        window = ";gauss11x11;sigma=1.5" if metric.startswith("ssim") else ""
        return f"{channel}{window};crop={self.crop_border};uint8;mean-over-images"

    def rows(self) -> list[dict]:
        return [{"metric": m, "value": self.mean(m), "std": self.std(m), "n_images": self.n_images,
                 "protocol": self.protocol(m), "higher_is_better": True} for m in METRICS]


def measure_tensors(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0,
                    names: list[str] | None = None) -> PSNRSSIMResult:
    """Batch form: ``(N,3,H,W)`` float in [0,1] each; quantised with ``degrade.to_uint8`` first."""
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: sr {tuple(sr.shape)} vs hr {tuple(hr.shape)}")
    a, b = tensor_to_rgb(sr), tensor_to_rgb(hr)
    names = names or [str(i) for i in range(len(a))]
    return PSNRSSIMResult([{"name": n, **measure(x, y, crop_border)} for n, x, y in zip(names, a, b)],
                          crop_border)


def _by_stem(folder: Path) -> dict[str, Path]:
    """Images below ``folder`` keyed by relative path without extension."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    out: dict[str, Path] = {}
    for p in io.list_images(folder):
        key = p.relative_to(folder).with_suffix("").as_posix()
        if key in out:
            raise ValueError(f"{folder}: two images share the name {key!r} ({out[key].name}, {p.name})")
        out[key] = p
    if not out:
        raise ValueError(f"{folder}: no images")
    return out


def read_pairs(sr_dir: str | Path, hr_dir: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, sr, hr)`` RGB uint8 ``(H,W,3)`` for every SR image and the HR image of the same
    name (relative path without extension; the extension may differ), sorted by name.

    Raises ``ValueError`` naming the files when the two folders do not hold the same names,
    when an image cannot be read, or when a pair differs in size.
    """
    sr, hr = _by_stem(Path(sr_dir)), _by_stem(Path(hr_dir))
    for missing, where, other in ((sorted(hr.keys() - sr.keys()), sr_dir, hr_dir),
                                  (sorted(sr.keys() - hr.keys()), hr_dir, sr_dir)):
        if missing:
            raise ValueError(f"{len(missing)} image(s) of {other} have no counterpart in {where}: "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    pairs = []
    for key in sorted(sr):
        try:
            a, b = io.read_rgb(sr[key]), io.read_rgb(hr[key])
        except io.UnreadableImage as e:
            raise ValueError(f"{key}: cannot read ({e})") from None
        if a.shape != b.shape:
            raise ValueError(f"{key}: size mismatch, SR {a.shape[1]}x{a.shape[0]} vs "
                             f"HR {b.shape[1]}x{b.shape[0]}")
        pairs.append((key, a, b))
    return pairs


def evaluate_folders(sr_dir: str | Path, hr_dir: str | Path, crop_border: int = 0) -> PSNRSSIMResult:
    """Measure every SR image against the HR image of the same name (see :func:`read_pairs`)."""
    return PSNRSSIMResult([{"name": key, **measure(a, b, crop_border)} for key, a, b in read_pairs(sr_dir, hr_dir)],
                          crop_border)
