"""Differentiable augmentation of discriminator inputs (DiffAugment; Zhao et al., NeurIPS 2020).

A discriminator trained on a few hundred images memorises them; augmenting *both* its real and
its fake inputs (and the generator's view of the fake ones) with the same random, differentiable
transforms keeps it from doing so without changing what the generator is asked to match. Used
by CR's D and D~ as an option (``CRConfig.d_augment``); the paper has no such term.

Images are ``(N,C,H,W)`` in [-1,1]; every transform draws its own parameters per image from
the global torch generator (so checkpoints that save the RNG state resume exactly).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def _brightness(x: torch.Tensor) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per image."""
    return x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    """Scale the distance from the per-pixel grey by a factor in [0, 2) per image."""
    grey = x.mean(dim=1, keepdim=True)
    return (x - grey) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + grey


def _contrast(x: torch.Tensor) -> torch.Tensor:
    """Scale the distance from the image mean by a factor in [0.5, 1.5) per image."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y (integer pixels, zero fill)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).clamp(-1, h)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))  # index -1 / h land on the zero border
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows + 1, cols + 1].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` times the image size at a random place per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - ch + 1, (n, 1, 1), device=x.device)
    left = torch.randint(0, w - cw + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "brightness": _brightness, "saturation": _saturation, "contrast": _contrast,
    "translation": _translation, "cutout": _cutout,
}


def check_policy(policy: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first transform of ``policy`` not in :data:`TRANSFORMS`."""
    for name in policy:
        if name not in TRANSFORMS:
            raise ValueError(f"diff_augment: unknown transform {name!r}; choose from {sorted(TRANSFORMS)}")


def diff_augment(x: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """Apply the named transforms (keys of :data:`TRANSFORMS`, in order) to ``(N,C,H,W)`` ``x``;
    gradients flow through every one. An empty policy returns ``x`` itself."""
    check_policy(policy)
    for name in policy:
        x = TRANSFORMS[name](x)
    return x
