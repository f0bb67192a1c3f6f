"""LRGAN (Bulat, Yang, Tzimiropoulos, ECCV 2018): learn the degradation first, then super-resolve.

Reference code read (not copied): jingyang2017/Face-and-Image-super-resolution (official test
code: model.py ``GEN_DEEP``, H2L.py ``Gen_h2l_0424``, Discriminator.py, dataset.py,
model_evaluation.py) and the third-party trainer yoon28/unpaired_face_sr (yoon_train.py,
yoon_model.py, yoon_data.py), whose author guessed several hyper-parameters.

- High-to-Low G (HR 64x64 + z ~ N(0, I_64) -> realistic LR 16x16): z through FC 64->4096 as a
  4th input channel; 12 residual blocks in an encoder (four stages of 2 blocks + BN-ReLU +
  stride-2 conv, 64->4) and decoder (two stages of 2 blocks + conv->4C + PixelShuffle + ReLU,
  4->16); conv->3, tanh.
- Low-to-High G (:class:`L2HGenerator`): pre-activation blocks, 12 @16x16 (256 ch), 3 @32x32
  (128 ch), 2 @64x64 (96 ch) in the ``paper`` layout; the ``official`` layout reproduces the
  released ``GEN_DEEP`` exactly (third group never built, ``a2`` present but unused), so its
  state dict loads the official ``model.pkl`` strictly (:func:`load_official_l2h`).
- Discriminators: SNGAN ResNets (128 ch, 5 blocks, average pooling), hinge loss.
- Losses: ``alpha * pixel + beta * GAN`` with alpha = 1, beta = 0.05 for both generators; H2L pixel
  target ``avgpool4(y)``; L2H input is the *detached* H2L output, target ``y``; z re-sampled each
  batch. Both GANs update every iteration, D steps first (as yoon_train.py).

Trained on unpaired HR and genuine LR. Images are [-1,1] inside.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lrfacebench.degrade import downsample
from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage
from lrfacebench.nn.blocks import BasicResidualBlock
from lrfacebench.nn.losses import hinge_d, hinge_g
from lrfacebench.nn.sngan import SNResNetDiscriminator, real_fake_logits
from lrfacebench.pixels import signed_to_unit, unit_to_signed

CELEBA_FACES = 202_599  # one "epoch" = one pass over the HR set (CelebA here)


class H2LGenerator(nn.Module):
    """``(N,3,64,64)`` HR in [-1,1] and ``(N,noise_dim)`` z -> ``(N,3,16,16)`` LR in [-1,1]."""

    def __init__(self, ch: int = 64, noise_dim: int = 64) -> None:
        super().__init__()
        self.noise_fc = nn.Linear(noise_dim, 64 * 64)
        self.head = nn.Conv2d(4, ch, 3, padding=1)
        down: list[nn.Module] = []
        for _ in range(4):  # 64 -> 32 -> 16 -> 8 -> 4
            down += [BasicResidualBlock(ch), BasicResidualBlock(ch), nn.BatchNorm2d(ch), nn.ReLU(True),
                     nn.Conv2d(ch, ch, 3, stride=2, padding=1)]
        self.down = nn.Sequential(*down)
        up: list[nn.Module] = []
        for _ in range(2):  # 4 -> 8 -> 16
            up += [BasicResidualBlock(ch), BasicResidualBlock(ch), nn.Conv2d(ch, 4 * ch, 3, padding=1),
                   nn.PixelShuffle(2), nn.ReLU(True)]
        self.up = nn.Sequential(*up)
        self.tail = nn.Sequential(nn.Conv2d(ch, 3, 3, padding=1), nn.Tanh())

    def forward(self, hr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if hr.shape[-2:] != (64, 64):
            raise ValueError(f"H2L expects 64x64 HR, got {tuple(hr.shape)}")
        noise = self.noise_fc(z).view(-1, 1, 64, 64)
        h = F.relu(self.head(torch.cat([hr, noise], 1)))
        return self.tail(self.up(self.down(h)))


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (no conv bias) plus skip (1x1 conv when widths differ).

    Attribute names (``bn1, conv1, bn2, conv2, skip``) are those of the official ``BasicBlock``.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + (x if self.skip is None else self.skip(x))


class L2HGenerator(nn.Module):
    """Low-to-High G: ``(N,3,16,16)`` in [-1,1] -> ``(N,3,64,64)`` in [-1,1] (tanh).

    conv3x3 3->C0; group 0 (``blocks[0]`` blocks, C0, 16x16) with an identity group skip;
    x2 up (bilinear, BN, ReLU, 1x1 transposed conv); group 1 (C0->C1, ``blocks[1]`` blocks, 32x32)
    with the 1x1 group shortcut ``a1``; x2 up; in the ``paper`` layout group 2 (C1->C2,
    ``blocks[2]`` blocks, 64x64) with shortcut ``a2``; tail conv3x3 ->C2, ReLU, 1x1, ReLU, 1x1->3, tanh.

    ``layout="official"`` is the released ``GEN_DEEP``: its loop builds only groups 0 and 1, ``a2``
    exists but is never used and the tail reads C1 channels. Module names follow that file so the
    state-dict keys match ``model.pkl`` (``layers_in``, ``layers_set_final.*``,
    ``layers_set_final_up.{0,1}.{1,3}``, ``a1.0``, ``a2.0``, ``main.{0,2,4}``). Defaults there:
    15,490,403 parameters.
    """

    def __init__(self, channels: tuple[int, int, int] = (256, 128, 96),
                 blocks: tuple[int, int, int] = (12, 3, 2), layout: str = "paper") -> None:
        super().__init__()
        if layout not in ("paper", "official"):
            raise ValueError(f"L2H layout must be paper|official, got {layout!r}")
        if len(channels) != 3 or len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"L2H needs 3 channel widths and 3 block counts >= 1, got {channels}, {blocks}")
        self.layout = layout
        c0, c1, c2 = channels
        n_groups = 3 if layout == "paper" else 2
        self.layers_in = _conv3x3(3, c0)
        self.a1 = nn.Sequential(nn.Conv2d(c0, c1, 1))
        self.a2 = nn.Sequential(nn.Conv2d(c1, c2, 1))
        widths = [(c0, c0), (c0, c1), (c1, c2)][:n_groups]
        self.layers_set_final = nn.ModuleList(
            nn.Sequential(PreActBlock(cin, cout), *[PreActBlock(cout, cout) for _ in range(n - 1)])
            for (cin, cout), n in zip(widths, blocks))
        self.layers_set_final_up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                          nn.BatchNorm2d(c), nn.ReLU(True), nn.ConvTranspose2d(c, c, 1))
            for c in (c0, c1))
        tail_in = c2 if layout == "paper" else c1
        self.main = nn.Sequential(_conv3x3(tail_in, c2), nn.ReLU(True), nn.Conv2d(c2, c2, 1), nn.ReLU(True),
                                  nn.Conv2d(c2, 3, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers_in(x)
        x = x + self.layers_set_final[0](x)
        x = self.layers_set_final_up[0](x)
        x = self.layers_set_final[1](x) + self.a1(x)
        x = self.layers_set_final_up[1](x)
        if self.layout == "paper":
            x = self.layers_set_final[2](x) + self.a2(x)
        return self.main(x)


def load_official_l2h(path: str | Path, channels: tuple[int, int, int] = (256, 128, 96),
                      blocks: tuple[int, int, int] = (12, 3, 2)) -> L2HGenerator:
    """The official ``model.pkl`` (a ``GEN_DEEP`` state dict) as an :class:`L2HGenerator`
    (``official`` layout), loaded with ``strict=True``; ``ValueError`` lists key mismatches."""
    net = L2HGenerator(channels, blocks, layout="official")
    state = convert_official_state(torch.load(Path(path), map_location="cpu", weights_only=True))
    missing = sorted(set(net.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(net.state_dict()))
    if missing or unexpected:
        raise ValueError(f"{path} is not an official LRGAN GEN_DEEP state dict: missing keys "
                         f"{missing[:8]}{'…' if len(missing) > 8 else ''}, unexpected keys "
                         f"{unexpected[:8]}{'…' if len(unexpected) > 8 else ''}")
    net.load_state_dict(state, strict=True)
    return net


def convert_official_state(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Normalise an official checkpoint: drop a DataParallel ``module.`` prefix and add the
    ``num_batches_tracked`` counters that BatchNorm checkpoints written before PyTorch 0.4.1 lack."""
    if not isinstance(state, Mapping):
        raise ValueError(f"expected a state dict (mapping of tensors), got {type(state).__name__}")
    out = OrderedDict((k.removeprefix("module."), v) for k, v in state.items())
    for k in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(k.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0))
    return out


@dataclass
class LRGANConfig(MethodConfig):
    l2h_layout: str = "paper"  # "official": the released GEN_DEEP (variant official)
    l2h_channels: tuple[int, int, int] = (256, 128, 96)
    l2h_blocks: tuple[int, int, int] = (12, 3, 2)
    h2l_channels: int = 64
    noise_dim: int = 64
    d_channels: int = 128
    alpha: float = 1.0  # pixel-loss weight (both generators)
    beta: float = 0.05  # GAN-loss weight (both generators)
    h2l_target: str = "avgpool"  # pixel target of H2L: avgpool4(y), or "bicubic" (= DS)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    batch_size: int = 32
    iterations: int = 50 * (CELEBA_FACES // 32)  # 50 epochs (yoon_train.py) = 316,550
    # Legacy only (the official test's save_image(normalize=True)): per-image min-max stretch of
    # the output instead of clamping. Off everywhere except the fid_lrgan_legacy protocol.
    legacy_minmax_output: bool = False
    d_blocks: tuple[bool, ...] = (True, True, False, False, False)  # 16x16 D: 2 of 5 blocks pool
    d64_blocks: tuple[bool, ...] = (True, True, True, True, False)  # 64x64 D: 4 of 5 blocks pool


class LRGAN(Method):
    name = "lrgan"
    summary = "LRGAN: High-to-Low GAN learns genuine degradation, Low-to-High GAN super-resolves (hinge, SN)"
    Config = LRGANConfig
    presets = {
        "paper": {},
        # the paper's depths at a quarter (L2H) / half (H2L) of the widths, ~10 minutes on 2 cores
        "cpu": {"l2h_channels": [64, 32, 32], "h2l_channels": 32, "d_channels": 64, "batch_size": 16,
                "iterations": 500},
        # smoke: tiny nets and a 10x larger lr, so that 20 steps visibly lower the pixel losses
        "smoke": {"l2h_channels": [16, 8, 8], "l2h_blocks": [2, 1, 1], "h2l_channels": 8, "d_channels": 16,
                  "batch_size": 8, "iterations": 20, "lr": 1e-3},
    }
    variants = {"default": {}, "official": {"l2h_layout": "official"}}
    deployed = ("g_l2h",)

    def __init__(self, config: LRGANConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        if c.h2l_target not in ("avgpool", "bicubic"):
            raise ValueError(f"lrgan: h2l_target must be avgpool|bicubic, got {c.h2l_target!r}")
        nets = {
            "g_h2l": H2LGenerator(c.h2l_channels, c.noise_dim),
            "g_l2h": L2HGenerator(tuple(c.l2h_channels), tuple(c.l2h_blocks), c.l2h_layout),
            "d_h2l": SNResNetDiscriminator([c.d_channels] * len(c.d_blocks), c.d_blocks, pool="avg"),
            "d_l2h": SNResNetDiscriminator([c.d_channels] * len(c.d64_blocks), c.d64_blocks, pool="avg"),
        }
        self.nets = {k: v.to(self.device) for k, v in nets.items()}
        self.optimizers = {k: torch.optim.Adam(v.parameters(), lr=c.lr, betas=tuple(c.betas))
                           for k, v in self.nets.items()}

    @classmethod
    def from_official(cls, path: str | Path, device: torch.device | str = "cpu") -> "LRGAN":
        """An ``official``-variant LRGAN whose deployed L2H holds the released ``model.pkl``."""
        method = cls(cls.make_config("paper", "official"), device)
        method.nets["g_l2h"].load_state_dict(load_official_l2h(path).state_dict(), strict=True)
        return method

    def stages(self) -> list[Stage]:
        return [Stage("train", self.config.iterations, ("hr", "lr_genuine"), self.config.batch_size)]

    def degrade(self, hr: torch.Tensor) -> torch.Tensor:
        """H2L on ``(N,3,64,64)`` [-1,1] HR with a fresh z ~ N(0, I) per call -> ``(N,3,16,16)``."""
        z = torch.randn(hr.shape[0], self.config.noise_dim, device=hr.device)
        return self.nets["g_h2l"](hr, z)

    # ----- losses -----------------------------------------------------------------------------
    def forward_pair(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr_gen, hr_gen)``: H2L output (with graph) and L2H of its *detached* copy."""
        lr_gen = self.degrade(hr)
        return lr_gen, self.nets["g_l2h"](lr_gen.detach())

    def discriminator_losses(self, hr: torch.Tensor, lr_real: torch.Tensor, lr_gen: torch.Tensor,
                             hr_gen: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.nets
        return {"d_h2l": hinge_d(*real_fake_logits(n["d_h2l"], lr_real, lr_gen.detach())),
                "d_l2h": hinge_d(*real_fake_logits(n["d_l2h"], hr, hr_gen.detach()))}

    def generator_losses(self, hr: torch.Tensor, lr_gen: torch.Tensor,
                         hr_gen: torch.Tensor) -> dict[str, torch.Tensor]:
        c, n = self.config, self.nets
        out = {"pixel_h2l": F.mse_loss(lr_gen, downsample(hr, 4, c.h2l_target)),
               "gan_h2l": hinge_g(n["d_h2l"](lr_gen)),
               "pixel_l2h": F.mse_loss(hr_gen, hr),
               "gan_l2h": hinge_g(n["d_l2h"](hr_gen))}
        out["g_h2l"] = c.alpha * out["pixel_h2l"] + c.beta * out["gan_h2l"]
        out["g_l2h"] = c.alpha * out["pixel_l2h"] + c.beta * out["gan_l2h"]
        return out

    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        self.train()
        n, opt = self.nets, self.optimizers
        hr, lr_real = unit_to_signed(batch.hr), unit_to_signed(batch.lr_genuine)
        lr_gen, hr_gen = self.forward_pair(hr)
        self.zero_grad()
        d = self.discriminator_losses(hr, lr_real, lr_gen, hr_gen)
        (d["d_h2l"] + d["d_l2h"]).backward()
        opt["d_h2l"].step()
        opt["d_l2h"].step()
        for k in ("d_h2l", "d_l2h"):
            n[k].requires_grad_(False)
        self.zero_grad()
        g = self.generator_losses(hr, lr_gen, hr_gen)
        (g["g_h2l"] + g["g_l2h"]).backward()  # disjoint graphs: H2L's output is detached for L2H
        opt["g_h2l"].step()
        opt["g_l2h"].step()
        for k in ("d_h2l", "d_l2h"):
            n[k].requires_grad_(True)
        return {**{k: v.item() for k, v in g.items()}, **{k: v.item() for k, v in d.items()}}

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        sr = signed_to_unit(self.nets["g_l2h"](unit_to_signed(lr.to(self.device))))
        if self.config.legacy_minmax_output:  # legacy protocol only (see config)
            lo = sr.amin(dim=(1, 2, 3), keepdim=True)
            hi = sr.amax(dim=(1, 2, 3), keepdim=True)
            return (sr - lo) / (hi - lo).clamp_min(1e-8)
        return sr.clamp(0, 1)
