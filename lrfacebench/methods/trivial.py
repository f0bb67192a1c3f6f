"""Trivial up-samplers: ``bicubic`` (the reference of Tables 1 and 3) and the sanity methods
``nearest`` and ``bicubic_noise`` that every comparison shows beside the real methods.

A metric that cannot rank ``nearest`` below ``bicubic``, or that rewards ``bicubic_noise`` over
``bicubic``, cannot rank super-resolution methods either; these rows let a reader see that at a
glance (protocol issue: FID at small N improved when noise was added).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lrfacebench.degrade import to_uint8, upsample
from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage


class _Untrained(Method):
    """A method with no training stages."""

    def stages(self) -> list[Stage]:
        return []

    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        raise RuntimeError(f"{self.name} has no training stages")


class Bicubic(_Untrained):
    name = "bicubic"
    summary = "MATLAB-style bicubic x4 up-sampling (a=-0.5); no training"

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        return upsample(lr.to(self.device), 4).clamp(0, 1)


class Nearest(_Untrained):
    name = "nearest"
    summary = "nearest-neighbour x4 up-sampling (sanity row: blockier than bicubic); no training"

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        return F.interpolate(lr.to(self.device), scale_factor=4, mode="nearest").clamp(0, 1)


@dataclass
class NoiseConfig(MethodConfig):
    noise_sigma: float = 0.03  # std of the added Gaussian noise, in [0,1] units
    noise_seed: int = 0


class BicubicNoise(_Untrained):
    """Bicubic x4 plus white Gaussian noise. The noise of each face is a pure function of the
    face's quantised pixels and ``noise_seed``, so outputs do not depend on batching or order."""

    name = "bicubic_noise"
    summary = "bicubic x4 + Gaussian noise (sigma 0.03; sanity row: a metric must not reward it); no training"
    Config = NoiseConfig

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        up = upsample(lr.to(self.device), 4)
        noise = torch.empty_like(up)
        for i, face in enumerate(to_uint8(lr).cpu()):
            digest = hashlib.sha256(face.numpy().tobytes() + str(self.config.noise_seed).encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
            noise[i] = torch.randn(up.shape[1:], generator=g).to(up.device)
        return (up + self.config.noise_sigma * noise).clamp(0, 1)
