"""The one definition of resampling used everywhere in lrfacebench.

``DS`` (the paper's f_DS) is MATLAB-style ``imresize`` bicubic: Keys cubic with a = -0.5,
antialiased when down-sampling (kernel stretched by the scale), symmetric boundary
handling. It is written as two fixed resampling matrices applied separably, so it is
differentiable and runs batched on any device. Artificial LR for training (x_a), the
cycle term of Eq. 7, the paired CelebA/Helen sets and the benchmark's artificial-LR inputs
all call :func:`downsample`; bicubic up-sampling (the ``bicubic`` method, VDSR's input,
CycleGAN's domain A) calls :func:`upsample`.

Note: ``torch.nn.functional.interpolate(mode="bicubic")`` uses a = -0.75 and no
antialiasing by default, so it is *not* this function.
"""
from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Kernel = Literal["bicubic", "avgpool", "bilinear"]
KERNELS: tuple[str, ...] = ("bicubic", "avgpool", "bilinear")


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1) + (
        a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    ) * ((ax > 1) & (ax <= 2))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1 - np.abs(x), 0, None)


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int, kernel: str = "bicubic") -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix of MATLAB ``imresize`` along one axis.

    Antialiased when shrinking; boundary pixels are mirrored (MATLAB's symmetric padding).
    """
    scale = out_size / in_size
    fn, width = (_cubic, 4.0) if kernel == "bicubic" else (_triangle, 2.0)
    if scale < 1:  # antialiasing: stretch the kernel
        kfn = lambda x: scale * fn(scale * x)  # noqa: E731
        width = width / scale
    else:
        kfn = fn
    out = np.arange(1, out_size + 1, dtype=np.float64)
    u = out / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based
    w = kfn(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric padding: mirror out-of-range indices back into [1, in_size]
    period = 2 * in_size
    m = np.mod(idx - 1, period)
    m = np.where(m >= in_size, period - 1 - m, m).astype(np.int64)
    mat = np.zeros((out_size, in_size))
    for row in range(out_size):
        np.add.at(mat[row], m[row], w[row])
    return mat


def imresize(x: torch.Tensor, size: tuple[int, int], kernel: Kernel = "bicubic") -> torch.Tensor:
    """Resize ``(N,C,H,W)`` float tensors to ``size=(h,w)`` like MATLAB ``imresize``.

    Linear in ``x`` (any value range; no clamping), differentiable, device- and dtype-preserving.
    ``kernel="avgpool"`` is box averaging (integer down-sampling factors only).
    """
    if x.ndim != 4:
        raise ValueError(f"expected (N,C,H,W), got shape {tuple(x.shape)}")
    h, w = size
    if kernel == "avgpool":
        H, W = x.shape[-2:]
        if H % h or W % w:
            raise ValueError(f"avgpool needs integer factors, got {H}x{W} -> {h}x{w}")
        return F.avg_pool2d(x, (H // h, W // w))
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    mh = torch.as_tensor(resize_matrix(x.shape[-2], h, kernel), dtype=dtype, device=x.device)
    mw = torch.as_tensor(resize_matrix(x.shape[-1], w, kernel), dtype=dtype, device=x.device)
    y = torch.einsum("oh,nchw,pw->ncop", mh, x.to(dtype), mw)
    return y.to(x.dtype)


def downsample(x: torch.Tensor, factor: int = 4, kernel: Kernel = "bicubic") -> torch.Tensor:
    """DS: ``(N,C,H,W)`` -> ``(N,C,H/factor,W/factor)``, e.g. 64x64 HR -> 16x16 artificial LR."""
    return imresize(x, (x.shape[-2] // factor, x.shape[-1] // factor), kernel)


def upsample(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Bicubic up-sampling consistent with DS: ``(N,C,h,w)`` -> ``(N,C,h*factor,w*factor)``."""
    return imresize(x, (x.shape[-2] * factor, x.shape[-1] * factor), "bicubic")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise ``[0,1]`` floats to uint8 with rounding and clamping (as MATLAB does)."""
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)
