"""Bicubic up-sampling with the project's DS-consistent kernel: the trivial reference method."""
from __future__ import annotations

import torch

from lrfacebench.degrade import upsample
from lrfacebench.methods.base import Batch, Method, Stage


class Bicubic(Method):
    name = "bicubic"
    summary = "MATLAB-style bicubic x4 up-sampling (a=-0.5); no training"

    def stages(self) -> list[Stage]:
        return []

    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        raise RuntimeError("bicubic has no training stages")

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        return upsample(lr.to(self.device), 4).clamp(0, 1)
