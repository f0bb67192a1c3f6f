"""Conversions between the three ways lrfacebench holds pixels, and between the two value ranges.

- RGB arrays: ``(H,W,3)`` (or ``(N,H,W,3)``) ``uint8`` numpy arrays, as files are read and written;
- stored faces: ``(N,3,H,W)`` ``uint8`` tensors (:class:`~lrfacebench.data.faces.FaceSet`);
- model tensors: ``(N,3,H,W)`` float tensors in [0,1] (the :class:`~lrfacebench.methods.base.Method`
  interface), or in [-1,1] inside the methods that work there (tanh outputs).

Float -> uint8 always goes through :func:`lrfacebench.degrade.to_uint8` (clamp, round), so that a
face is quantised the same way wherever it is stored.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lrfacebench.degrade import downsample, imresize, to_uint8


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H,W,3)`` uint8 -> ``(1,3,H,W)`` float32 in [0,1]."""
    return torch.from_numpy(np.require(rgb, requirements=("C", "W"))).permute(2, 0, 1)[None].float() / 255.0


def tensor_to_rgb(x: torch.Tensor) -> np.ndarray:
    """``(N,3,H,W)`` float in [0,1] -> ``(N,H,W,3)`` uint8 (quantised with ``to_uint8``), on the CPU."""
    return uint8_to_rgb(to_uint8(x.detach().cpu()))


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """``degrade.imresize`` (MATLAB bicubic, antialiased) of an RGB uint8 ``(h,w,3)`` image to
    ``(size,size,3)`` uint8."""
    return tensor_to_rgb(imresize(rgb_to_tensor(rgb), (size, size)))[0]


def downsample_rgb(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``degrade.downsample`` (DS) of an RGB uint8 ``(H,W,3)`` image, quantised again to uint8."""
    return tensor_to_rgb(downsample(rgb_to_tensor(rgb), factor))[0]


def rgbs_to_uint8(rgbs: Sequence[np.ndarray]) -> torch.Tensor:
    """Equally sized ``(H,W,3)`` uint8 arrays -> one ``(N,3,H,W)`` uint8 tensor."""
    return torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous()


def uint8_to_rgb(u8: torch.Tensor) -> np.ndarray:
    """``(N,3,H,W)`` uint8 tensor -> ``(N,H,W,3)`` uint8 array (a copy)."""
    return u8.permute(0, 2, 3, 1).numpy().copy()


def to_unit_float(u8: torch.Tensor) -> torch.Tensor:
    """``(N,3,H,W)`` uint8 -> float32 in [0,1]."""
    return u8.float() / 255


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Float in [0,1] -> the nearest uint8 level, as float in [0,1] (clamped): what storing a face
    as PNG and reading it back gives."""
    return to_uint8(x).float() / 255


def unit_to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> [-1,1] (``2x - 1``), the range of the methods with tanh generators."""
    return x * 2 - 1


def signed_to_unit(y: torch.Tensor) -> torch.Tensor:
    """[-1,1] -> [0,1] (``(y + 1) / 2``), unclamped."""
    return (y + 1) / 2
