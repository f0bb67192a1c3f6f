"""SNGAN-style ResNet discriminator (Miyato et al., ICLR 2018), used by CR's D / D~ and LRGAN.

Layout as in the SNGAN ResNet discriminators (and LRGAN's official
jingyang2017/Face-and-Image-super-resolution:Discriminator.py), written afresh:

- block 1 ("optimised" block, no activation on the raw image): conv3x3-ReLU-conv3x3[-avgpool2],
  shortcut [avgpool2]-conv1x1;
- blocks 2..n (pre-activation): ReLU-conv3x3-ReLU-conv3x3[-avgpool2], shortcut conv1x1[-avgpool2]
  when the block down-samples or changes width, identity otherwise;
- ReLU, global sum (SNGAN) or average (LRGAN's AvgPool over the final map) pooling, Linear -> 1.

Every conv and the Linear carry spectral normalisation (one power iteration per training-mode
forward; the ``_u``/``_v`` vectors are buffers, so they are saved in ``state_dict``).
Weights use Xavier-uniform initialisation (gain 1; sqrt(2) for the 1x1 shortcuts, as LRGAN).
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _sn_conv(in_ch: int, out_ch: int, kernel: int, gain: float = 1.0) -> nn.Module:
    layer = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    nn.init.xavier_uniform_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return spectral_norm(layer)


class SNResBlock(nn.Module):
    """One discriminator block: ``(N,in_ch,H,W)`` -> ``(N,out_ch,H',W')``, ``H' = H/2`` if downsampling.

    ``first=True`` is SNGAN's optimised first block (no ReLU before the first conv, shortcut
    pools before its 1x1 conv).
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, first: bool = False) -> None:
        super().__init__()
        self.first = first
        self.downsample = downsample
        self.conv1 = _sn_conv(in_ch, out_ch, 3)
        self.conv2 = _sn_conv(out_ch, out_ch, 3)
        learnable = first or downsample or in_ch != out_ch
        self.shortcut = _sn_conv(in_ch, out_ch, 1, gain=math.sqrt(2)) if learnable else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        if self.first:  # pool, then 1x1 conv
            s = self.shortcut(F.avg_pool2d(x, 2) if self.downsample else x)
        else:  # 1x1 conv, then pool
            s = self.shortcut(x)
            s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


class SNResNetDiscriminator(nn.Module):
    """``(N,in_ch,H,W)`` (images in [-1,1]) -> ``(N,)`` logits.

    ``channels[i]`` is the output width of block ``i``; ``downsample[i]`` whether it halves the
    resolution (2x2 average pooling). ``pool`` is the global pooling before the Linear: ``"sum"``
    (SNGAN) or ``"avg"`` (LRGAN). CR's D and D~ (16x16 input) are
    ``SNResNetDiscriminator([128] * 6, [True, True, False, False, False, False])``: 1,644,161
    parameters.
    """

    def __init__(self, channels: Sequence[int], downsample: Sequence[bool], in_ch: int = 3,
                 pool: Literal["sum", "avg"] = "sum") -> None:
        super().__init__()
        if len(channels) != len(downsample) or not channels:
            raise ValueError(f"channels and downsample must be non-empty and of equal length, "
                             f"got {len(channels)} and {len(downsample)}")
        if pool not in ("sum", "avg"):
            raise ValueError(f"pool must be 'sum' or 'avg', got {pool!r}")
        self.pool = pool
        blocks = []
        prev = in_ch
        for i, (ch, down) in enumerate(zip(channels, downsample)):
            blocks.append(SNResBlock(prev, ch, bool(down), first=(i == 0)))
            prev = ch
        self.blocks = nn.Sequential(*blocks)
        fc = nn.Linear(prev, 1)
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
        self.fc = spectral_norm(fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x))
        h = h.sum(dim=(2, 3)) if self.pool == "sum" else h.mean(dim=(2, 3))
        return self.fc(h).squeeze(1)


def real_fake_logits(d: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``d`` for ``real`` and ``fake`` from one forward over their concatenation.

    A spectral-norm discriminator updates its power-iteration vectors in place at every
    training-mode forward. One forward per discriminator step means one power iteration per step
    (SNGAN's schedule) and a backward that never meets a vector changed after it was saved, which
    a ``torch.compile``d network rejects (seen on CUDA when D ran twice). ``d`` must treat images
    independently (no batch statistics). Returns ``(d(real), d(fake))``.
    """
    logits = d(torch.cat([real, fake]))
    return logits[: len(real)], logits[len(real):]
