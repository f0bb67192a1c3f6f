"""Small generic building blocks shared by several networks (CR's phi_cr and D', LRGAN's H2L)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BasicResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity skip (He et al.): ``(N,ch,H,W)`` -> same shape.

    64 channels: 74,112 parameters. (SRGAN's PReLU variant is ``nn.srgan.ResidualBlock``.)
    """

    def __init__(self, ch: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MLPDiscriminator(nn.Module):
    """Fully connected discriminator on feature vectors: ``(N,dims[0])`` -> ``(N,)`` logits.

    ``dims`` lists the layer widths ending in 1, e.g. CR's D' ``(512, 512, 256, 128, 64, 1)``
    (5 Linear layers, LeakyReLU 0.2 between them, 435,201 parameters).
    """

    def __init__(self, dims: Sequence[int] = (512, 512, 256, 128, 64, 1), slope: float = 0.2) -> None:
        super().__init__()
        if len(dims) < 2 or dims[-1] != 1:
            raise ValueError(f"dims must have >= 2 entries and end in 1, got {tuple(dims)}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.LeakyReLU(slope, inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat).squeeze(1)
