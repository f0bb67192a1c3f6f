"""FSRNet's four networks (Chen et al., CVPR 2018) at 16x16 -> 64x64, and landmark heatmaps.

Written afresh from the paper's description, with cs-giung/FSRNet-pytorch (``nets.py``) and
liang23333/FSRNet-Tensorflow (``models/model_bn.py``) read for the details the paper leaves open.
Images are ``(N,3,64,64)`` in [-1,1]; the coarse network works at 64x64 on the bicubic input,
the fine encoder and the prior network at 32x32 (stride 2), the decoder returns to 64x64. The
paper's layout is the same one octave higher (128x128 from 16x16, priors at 64x64).
"""
from __future__ import annotations

import torch
from torch import nn

from lrfacebench.nn.blocks import BasicResidualBlock


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """conv (bias, 'same' padding for odd kernels) - BN - ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """Pre-activation bottleneck of the hourglass (Newell et al.): BN-ReLU-conv1x1 (out/2),
    BN-ReLU-conv3x3, BN-ReLU-conv1x1 (out), plus a skip (1x1 conv when the widths differ):
    ``(N,in_ch,H,W)`` -> ``(N,out_ch,H,W)``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True), nn.Conv2d(in_ch, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_ch, 1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels: ``(N,ch,H,W)`` -> same, ``H`` divisible by 2**depth.

    Each level keeps a :class:`Bottleneck` at its resolution and adds the max-pooled, recursed
    and nearest-up-sampled branch (pool, bottleneck, inner level, bottleneck, up x2)."""

    def __init__(self, ch: int, depth: int) -> None:
        super().__init__()
        self.skip = Bottleneck(ch, ch)
        self.down = nn.Sequential(nn.MaxPool2d(2), Bottleneck(ch, ch))
        self.inner = Hourglass(ch, depth - 1) if depth > 1 else Bottleneck(ch, ch)
        self.up = nn.Sequential(Bottleneck(ch, ch), nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.up(self.inner(self.down(x)))


class CoarseSR(nn.Module):
    """``(N,3,64,64)`` bicubic-up-sampled LR in [-1,1] -> coarse SR ``(N,3,64,64)`` (linear output):
    conv3x3-BN-ReLU, ``blocks`` residual blocks, conv3x3 -> 3."""

    def __init__(self, ch: int = 64, blocks: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(3, ch), *[BasicResidualBlock(ch) for _ in range(blocks)],
                                  nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FineEncoder(nn.Module):
    """Coarse SR ``(N,3,64,64)`` -> image features ``(N,ch,32,32)``: conv3x3 stride 2-BN-ReLU,
    ``blocks`` residual blocks, conv3x3-BN-ReLU."""

    def __init__(self, ch: int = 64, blocks: int = 12) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(3, ch, stride=2), *[BasicResidualBlock(ch) for _ in range(blocks)],
                                  conv_bn_relu(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PriorEstimator(nn.Module):
    """Coarse SR ``(N,3,64,64)`` -> (prior features ``(N,ch,32,32)``, prior maps ``(N,n_maps,32,32)``
    or ``None`` when ``n_maps`` is 0).

    conv7x7 stride 2 (64, or ``ch`` if narrower)-BN-ReLU, 3 bottlenecks (-> ``ch``), ``stacks``
    hourglasses of ``depth`` levels, each followed by conv1x1-BN-ReLU (Newell's "lin" layer: the
    hourglass's additive skips grow the features' scale, which this resets); a 1x1 conv head
    predicts the maps (landmark heatmaps) from the features."""

    def __init__(self, ch: int = 128, stacks: int = 2, depth: int = 4, n_maps: int = 5) -> None:
        super().__init__()
        stem = min(64, ch)
        self.body = nn.Sequential(conv_bn_relu(3, stem, 7, stride=2), Bottleneck(stem, ch),
                                  Bottleneck(ch, ch), Bottleneck(ch, ch),
                                  *[m for _ in range(stacks) for m in (Hourglass(ch, depth), conv_bn_relu(ch, ch, 1))])
        self.head = nn.Conv2d(ch, n_maps, 1) if n_maps else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = self.body(x)
        return feats, (self.head(feats) if self.head is not None else None)


class FineDecoder(nn.Module):
    """Image features ``(N,ch,32,32)`` beside prior features ``(N,prior_ch,32,32)`` -> fine SR
    ``(N,3,64,64)`` (linear output): conv3x3-BN-ReLU, deconv4x4 stride 2-BN-ReLU, ``blocks``
    residual blocks, conv3x3 -> 3."""

    def __init__(self, ch: int = 64, prior_ch: int = 128, blocks: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(ch + prior_ch, ch),
            nn.ConvTranspose2d(ch, ch, 4, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            *[BasicResidualBlock(ch) for _ in range(blocks)], nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, feats: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([feats, prior], 1))


def landmark_heatmaps(points: torch.Tensor, size: int, image_size: int = 64, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian heatmaps of landmarks: ``(B,K,2)`` ``(x, y)`` in image pixels of an
    ``image_size`` square (pixel i covers [i, i+1)) -> ``(B,K,size,size)`` float in [0,1].

    Map pixel ``(u, v)`` holds ``exp(-d^2 / (2 sigma^2))``, ``d`` the distance from its centre
    ``(u + 0.5, v + 0.5)`` to the landmark scaled to ``size`` (sigma in map pixels), so each map
    peaks (near 1) at the map pixel containing its landmark."""
    centres = torch.arange(size, device=points.device, dtype=points.dtype) + 0.5
    p = points * (size / image_size)
    dx = (centres.view(1, 1, 1, size) - p[..., 0, None, None]) ** 2
    dy = (centres.view(1, 1, size, 1) - p[..., 1, None, None]) ** 2
    return torch.exp(-(dx + dy) / (2 * sigma**2))
