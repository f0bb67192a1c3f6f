"""SRGAN building blocks (Ledig et al., CVPR 2017), shared by the SRGAN baseline and CR's phi_sr.

Layouts follow the SRGAN paper as implemented in
sgrvinod/a-PyTorch-Tutorial-to-Super-Resolution (models.py); written afresh here.
All image tensors are in [-1,1].
"""
from __future__ import annotations

import math

import torch
from torch import nn


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    """``kernel x kernel`` convolution with 'same' padding (for odd kernels) and a bias."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)


class ResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN plus identity skip: ``(N,ch,H,W)`` -> ``(N,ch,H,W)``."""

    def __init__(self, ch: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(ch, ch), nn.BatchNorm2d(ch), nn.PReLU(),
                                  conv(ch, ch), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleBlock(nn.Module):
    """Sub-pixel x2: conv3x3 ch->4ch, PixelShuffle(2), PReLU: ``(N,ch,H,W)`` -> ``(N,ch,2H,2W)``."""

    def __init__(self, ch: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(ch, 4 * ch), nn.PixelShuffle(2), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SRResNet(nn.Module):
    """SRGAN's generator: ``(N,3,h,w)`` in [-1,1] -> ``(N,3,s*h,s*w)`` in [-1,1] (tanh).

    conv9x9 3->ch + PReLU; ``n_blocks`` :class:`ResidualBlock`; conv3x3 + BN; skip around the
    blocks; log2(scale) :class:`UpsampleBlock`; conv9x9 ch->3; tanh. With the defaults
    (16 blocks, 64 channels, x4) it has 1,549,462 parameters.
    """

    def __init__(self, n_blocks: int = 16, ch: int = 64, scale: int = 4) -> None:
        super().__init__()
        n_up = int(math.log2(scale))
        if 2**n_up != scale:
            raise ValueError(f"scale must be a power of 2, got {scale}")
        self.head = nn.Sequential(conv(3, ch, 9), nn.PReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(ch) for _ in range(n_blocks)],
                                    conv(ch, ch), nn.BatchNorm2d(ch))
        self.up = nn.Sequential(*[UpsampleBlock(ch) for _ in range(n_up)])
        self.tail = nn.Sequential(conv(ch, 3, 9), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.up(h + self.blocks(h)))


class SRGANDiscriminator(nn.Module):
    """SRGAN discriminator: ``(N,in_ch,S,S)`` in [-1,1] -> ``(N,)`` logits, ``S = in_size``
    (``in_ch`` 3; 6 for a conditional D that sees an image beside its up-sampled LR input).

    8 conv3x3 layers, channels 64,64,128,128,256,256,512,512, strides 1,2,1,2,...;
    BN on all but the first; LeakyReLU 0.2; flatten; Linear -> ``fc``; LeakyReLU 0.2; Linear -> 1.
    The flattened size is ``512*(S/16)^2`` (the paper's 96x96 input gives 6x6; 64x64 gives 4x4).
    """

    def __init__(self, in_size: int = 64, ch: int = 64, fc: int = 1024, in_ch: int = 3) -> None:
        super().__init__()
        if in_size % 16:
            raise ValueError(f"in_size must be a multiple of 16, got {in_size}")
        layers: list[nn.Module] = []
        for i in range(8):
            out_ch = ch * 2 ** (i // 2)
            layers.append(conv(in_ch, out_ch, 3, stride=1 + i % 2))
            if i:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * (in_size // 16) ** 2, fc),
                                        nn.LeakyReLU(0.2), nn.Linear(fc, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(1)
