"""CR's two networks (methods.md §1.1): the characteristic regulariser and the SR module.

Both work on images in [-1,1]; ``PhiCR`` keeps the 16x16 size, ``PhiSR`` enlarges x4.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lrfacebench.nn.blocks import BasicResidualBlock
from lrfacebench.nn.srgan import ResidualBlock, UpsampleBlock, conv


class PhiCR(nn.Module):
    """Characteristic regulariser (phi_cr) or its inverse (phi~_cr): ``(N,3,16,16)`` -> same shape,
    [-1,1] in, unbounded out (no output activation, methods.md §1.1).

    conv3x3 3->64 + ReLU; 3 :class:`BasicResidualBlock`; conv3x3 64->3; plus the input (global
    skip). 225,859 parameters. The tail conv starts at zero, so the network starts as identity.

    ``noise_channels > 0`` (an option for phi~_cr, not in the paper): the head also sees that many
    channels of N(0,1) noise drawn anew at every call (from torch's global generator), so that the
    degradation it adds can be random, as sensor noise is (the noise input of Bulat et al.'s
    High-to-Low GAN, ECCV 2018).
    """

    def __init__(self, ch: int = 64, n_blocks: int = 3, noise_channels: int = 0) -> None:
        super().__init__()
        self.noise_channels = noise_channels
        self.head = nn.Sequential(nn.Conv2d(3 + noise_channels, ch, 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[BasicResidualBlock(ch) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(ch, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.noise_channels:
            noise = torch.randn(x.shape[0], self.noise_channels, *x.shape[2:], device=x.device, dtype=x.dtype)
            h = torch.cat([x, noise], dim=1)
        return x + self.tail(self.blocks(self.head(h)))


class PhiSR(nn.Module):
    """CR's SR module (phi_sr, "adapted SRGAN"): ``(N,3,16,16)`` in [-1,1] -> ``(N,3,64,64)`` in [-1,1].

    conv9x9 3->64 + PReLU; group 1 = 12 SRGAN residual blocks + conv3x3 + BN with a skip from the
    head (SRGAN's trunk); then for groups 2 and 3 (3 and 2 blocks): x2 sub-pixel up-sampling, the
    blocks, a skip around them; conv9x9 64->3 + tanh. 1,623,575 parameters.

    The paper says only "3 groups containing 12/3/2 residual blocks, resolution x2 across each
    group". The skips around groups 2 and 3 and the tanh are our fill-ins (methods.md §1.1); the
    conv-BN closing group 1 is SRGAN's, and it is what makes methods.md's 1.62M.
    """

    def __init__(self, ch: int = 64, groups: Sequence[int] = (12, 3, 2)) -> None:
        super().__init__()
        self.head = nn.Sequential(conv(3, ch, 9), nn.PReLU())
        self.trunk = nn.Sequential(*[ResidualBlock(ch) for _ in range(groups[0])],
                                   conv(ch, ch), nn.BatchNorm2d(ch))
        self.ups = nn.ModuleList(UpsampleBlock(ch) for _ in groups[1:])
        self.groups = nn.ModuleList(nn.Sequential(*[ResidualBlock(ch) for _ in range(n)])
                                    for n in groups[1:])
        self.tail = nn.Sequential(conv(ch, 3, 9), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.trunk(h)
        for up, group in zip(self.ups, self.groups):
            h = up(h)
            h = h + group(h)
        return self.tail(h)
