"""VDSR (Kim, Lee, Lee, CVPR 2016): a 20-layer residual CNN on the bicubic-upsampled input.

Reference code read (not copied): twtygqyy/pytorch-vdsr (vdsr.py, main_vdsr.py). Deviations from
the paper, all listed in baselines/README.md: RGB in and out instead of Y only; the bicubic input
is the project's DS-consistent kernel (:func:`lrfacebench.degrade.upsample`); epochs are counted
in CelebA passes and expressed in iterations.

Trained on artificial pairs only (``hr``, ``lr_artificial = DS(hr)``), as in the CR paper.
Works in [0,1] like the original (no [-1,1] conversion).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lrfacebench.degrade import upsample
from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage

CELEBA_FACES = 202_599  # one "epoch" = one pass over CelebA (as CR's schedule counts it)


class VDSRNet(nn.Module):
    """``depth`` conv3x3 layers without bias (ReLU between them) predicting a residual.

    ``(N,3,64,64)`` bicubic image ``b`` in [0,1] -> ``b + r(b)`` (unclamped). Depth 20 and
    64 channels: 667,008 parameters.
    """

    def __init__(self, depth: int = 20, channels: int = 64) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"VDSR needs depth >= 2, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1, bias=False))
        self.residual = nn.Sequential(*layers)
        for m in self.modules():  # He initialisation, as the paper
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        return b + self.residual(b)


@dataclass
class VDSRConfig(MethodConfig):
    depth: int = 20
    channels: int = 64
    batch_size: int = 64
    iterations: int = 80 * (CELEBA_FACES // 64)  # 80 epochs = 253,280 iterations
    lr: float = 0.1
    lr_step: int = 20 * (CELEBA_FACES // 64)  # lr / 10 every 20 epochs = 63,320 iterations
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # "adjustable" (paper): clip every gradient element to [-theta/lr, theta/lr];
    # "norm": twtygqyy's clip_grad_norm(clip_norm), not lr-scaled; "none".
    clip: str = "adjustable"
    # The paper does not state theta. 0.01 let the first steps (loss ~1e4 at init) kill the
    # ReLUs of the full net on 64x64 RGB in our runs; 0.001 trains stably. See README.
    clip_theta: float = 0.001
    clip_norm: float = 0.4


class VDSR(Method):
    name = "vdsr"
    summary = "VDSR: 20-layer residual CNN on the bicubic input, SGD with adjustable clipping (artificial pairs)"
    Config = VDSRConfig
    presets = {
        "paper": {},
        # the real 20-layer net, ~10 minutes on 2 cores; lr / 10 after 300 steps. Deviation:
        # twtygqyy's norm clipping, which trained faster than the paper's rule in 200-step trials
        "cpu": {"batch_size": 16, "iterations": 400, "lr_step": 300, "clip": "norm"},
        "smoke": {"depth": 6, "channels": 16, "batch_size": 8, "iterations": 30, "lr": 0.01,
                  "lr_step": 1000},
    }
    variants = {"default": {}}
    deployed = ("vdsr",)

    def __init__(self, config: VDSRConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        if config.clip not in ("adjustable", "norm", "none"):
            raise ValueError(f"vdsr: clip must be adjustable|norm|none, got {config.clip!r}")
        self.nets["vdsr"] = VDSRNet(config.depth, config.channels).to(self.device)
        self.optimizers["vdsr"] = torch.optim.SGD(
            self.nets["vdsr"].parameters(), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay)

    def stages(self) -> list[Stage]:
        return [Stage("train", self.config.iterations, ("hr", "lr_artificial"), self.config.batch_size)]

    def lr_at(self, step: int) -> float:
        """Step schedule: ``lr * 0.1 ** (step // lr_step)``."""
        return self.config.lr * 0.1 ** (step // self.config.lr_step)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``loss`` = the paper's objective ``1/2 ||y - f(x)||^2`` summed over pixels, averaged
        over the batch (values in [0,1]); ``mse`` = the element mean, for comparison."""
        sr = self.nets["vdsr"](upsample(batch.lr_artificial, 4))
        err = (sr - batch.hr).pow(2)
        return {"loss": 0.5 * err.flatten(1).sum(1).mean(), "mse": err.mean()}

    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        self.train()
        net, opt = self.nets["vdsr"], self.optimizers["vdsr"]
        lr = self.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        losses = self.loss(batch)
        losses["loss"].backward()
        if self.config.clip == "adjustable":
            nn.utils.clip_grad_value_(net.parameters(), self.config.clip_theta / lr)
        elif self.config.clip == "norm":
            nn.utils.clip_grad_norm_(net.parameters(), self.config.clip_norm)
        opt.step()
        return {"loss": losses["loss"].item(), "mse": losses["mse"].item(), "lr": lr}

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        return self.nets["vdsr"](upsample(lr.to(self.device), 4)).clamp(0, 1)
