"""CentreFace (Wen et al., ECCV 2016): a face recogniser trained by softmax + centre loss.

CR's phi_fr (the feature extractor behind Eq. 8 and the Table 2 rank-1 protocol). The paper
names only "CentreFace"; the network is our fill-in (methods.md §1.1): a small residual CNN for
64x64 faces -- conv3x3 stem, four stride-2 stages of one PReLU basic block each (widths
32-64-128-256, 64 -> 4 pixels), flatten, and ``fc5`` to the 512-d feature, as in Wen et al. whose
feature is the fc5 output. The centre loss follows KaiyangZhou/pytorch-center-loss
(``center_loss.py``): per sample squared L2 distance to its class centre, summed over feature
dimensions and averaged over the batch; centres are parameters updated by their own SGD.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class _PReLUBlock(nn.Module):
    """ResNet basic block with PReLU: ``(N,in_ch,H,W)`` -> ``(N,out_ch,H/stride,W/stride)``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut = (nn.Identity() if stride == 1 and in_ch == out_ch else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)))
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class CentreFace(nn.Module):
    """Face recogniser: ``(N,3,64,64)`` in [-1,1] -> ``(N,feat_dim)`` features (``embed``/``forward``);
    ``classify(feat)`` -> ``(N,n_identities)`` logits (softmax head, training only).

    ``n_identities = 0`` builds the feature extractor alone (e.g. to load a trained one for
    inference); :meth:`classify` then raises.
    """

    def __init__(self, n_identities: int, feat_dim: int = 512,
                 widths: Sequence[int] = (32, 64, 128, 256), in_size: int = 64) -> None:
        super().__init__()
        if n_identities < 0:
            raise ValueError(f"n_identities must be >= 0, got {n_identities}")
        self.n_identities = n_identities
        self.feat_dim = feat_dim
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        stages, prev = [], widths[0]
        for w in widths:
            stages.append(_PReLUBlock(prev, w, stride=2))
            prev = w
        self.stages = nn.Sequential(*stages)
        side = in_size // 2 ** len(widths)
        self.fc5 = nn.Sequential(nn.Flatten(), nn.Linear(prev * side * side, feat_dim))
        self.classifier = nn.Linear(feat_dim, n_identities) if n_identities > 0 else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,3,64,64)`` in [-1,1] -> ``(N,feat_dim)`` fc5 features (not normalised)."""
        return self.fc5(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def classify(self, feat: torch.Tensor) -> torch.Tensor:
        """``(N,feat_dim)`` -> ``(N,n_identities)`` identity logits."""
        if self.classifier is None:
            raise RuntimeError("CentreFace was built with n_identities=0: it has no softmax head")
        return self.classifier(feat)


class CentreLoss(nn.Module):
    """Centre loss: ``mean_i ||feat_i - c_{label_i}||^2`` (sum over dimensions, mean over the batch).

    Centres are ``(n_classes, feat_dim)`` parameters initialised from N(0,1) (as KaiyangZhou's).
    Train them with their own SGD (lr 0.5) on gradients divided by the loss weight, so the
    weight does not change how fast centres move (KaiyangZhou's ``main.py``).
    """

    def __init__(self, n_classes: int, feat_dim: int = 512) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.randn(n_classes, feat_dim))

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``feat (N,feat_dim)``, ``labels (N,)`` int64 in [0, n_classes) -> 0-d loss."""
        return (feat - self.centres[labels]).pow(2).sum(dim=1).mean()
