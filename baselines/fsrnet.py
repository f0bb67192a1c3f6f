"""FSRNet / FSRGAN (Chen, Tai, Liu, Shen, Yang, CVPR 2018): face SR with facial priors, x4.

Coarse SR network on the bicubic input -> fine SR encoder and prior estimation network (two
hourglasses predicting landmark heatmaps) side by side -> fine SR decoder on both feature maps
(networks: :mod:`lrfacebench.nn.fsrnet`). One end-to-end stage on artificial pairs:

    L = mse(coarse, hr) + mse(fine, hr) + prior_weight * mse(heatmaps, target heatmaps)

in [-1,1] (heatmaps in [0,1]). The prior targets are Gaussian heatmaps of MTCNN's 5 landmarks of
each HR face (``prior_loss=landmarks``, the default of every preset; detected by the data layer
and handed over in :attr:`Batch.landmarks`); ``prior_loss=none`` drops the term and the head (the
prior network then only feeds features to the decoder). The paper's priors are 68 landmarks and
11 parsing maps (GFC); no parsing labels exist here and no parsing surrogate is used.

Variant ``fsrgan`` adds the paper's conditional adversarial loss, ``adv_weight`` (1e-3) x
BCE(D(fine, up(x)), 1), with a D step BCE(D(hr, up(x)), 1) + BCE(D(sg fine, up(x)), 0) after each
G step. **Deviation**: FSRGAN's perceptual loss (VGG features, weight 0.1) is left out: no
ImageNet VGG weights exist offline and nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lrfacebench.degrade import upsample
from lrfacebench.methods.base import LANDMARKS, Batch, Method, MethodConfig, Stage
from lrfacebench.nn.fsrnet import CoarseSR, FineDecoder, FineEncoder, PriorEstimator, landmark_heatmaps
from lrfacebench.nn.losses import bce_fake, bce_real
from lrfacebench.nn.srgan import SRGANDiscriminator
from lrfacebench.pixels import signed_to_unit, unit_to_signed

PRIOR_LOSSES = ("landmarks", "none")
N_LANDMARKS = 5  # MTCNN's landmarks (Batch.landmarks)
GENERATOR = ("coarse", "encoder", "prior", "decoder")


def bicubic(lr: torch.Tensor) -> torch.Tensor:
    """``(N,3,16,16)`` in [0,1] -> the network input ``(N,3,64,64)`` in [-1,1]: the project's
    DS-consistent bicubic x4 (:func:`lrfacebench.degrade.upsample`), clamped to [0,1] first."""
    return unit_to_signed(upsample(lr, 4).clamp(0, 1))


@dataclass
class FSRNetConfig(MethodConfig):
    channels: int = 64  # coarse net, encoder, decoder
    prior_channels: int = 128  # prior estimation network (hourglasses)
    coarse_blocks: int = 3
    encoder_blocks: int = 12
    decoder_blocks: int = 3
    hourglasses: int = 2
    hourglass_depth: int = 4  # levels per hourglass: 32x32 -> 2x2
    prior_loss: str = "landmarks"  # landmarks | none
    prior_weight: float = 1.0
    heatmap_sigma: float = 1.0  # in prior-map pixels (32x32): 2 HR pixels
    batch_size: int = 14
    # 100 epochs of the paper's 18,000 CelebA training faces at batch 14 (cs-giung's schedule)
    iterations: int = 128_571
    lr: float = 2.5e-4  # RMSprop
    adv_weight: float = 1e-3  # fsrgan: gamma_C
    d_channels: int = 64
    d_fc: int = 1024


class FSRNet(Method):
    name = "fsrnet"
    summary = ("FSRNet: coarse SR -> fine encoder + hourglass prior net (MTCNN 5-landmark heatmaps) -> "
               "decoder, MSE on coarse, fine and priors (artificial pairs); variant fsrgan adds the "
               "conditional adversarial loss (no perceptual loss: deviation)")
    Config = FSRNetConfig
    presets = {
        "paper": {},
        # narrower nets (a quarter of the convolution cost), about 6 minutes on one CPU thread
        "cpu": {"channels": 32, "prior_channels": 64, "batch_size": 8, "iterations": 300, "d_channels": 16,
                "d_fc": 128},
        "smoke": {"channels": 8, "prior_channels": 16, "coarse_blocks": 1, "encoder_blocks": 1,
                  "decoder_blocks": 1, "hourglasses": 1, "hourglass_depth": 2, "batch_size": 4,
                  "iterations": 12, "lr": 1e-3, "d_channels": 8, "d_fc": 32},
    }
    variants = {"default": {}, "fsrgan": {}}  # the variant alone adds the adversarial loss
    deployed = GENERATOR

    def __init__(self, config: FSRNetConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        if config.prior_loss not in PRIOR_LOSSES:
            raise ValueError(f"fsrnet: prior_loss must be one of {'|'.join(PRIOR_LOSSES)}, got {config.prior_loss!r}")
        c = config
        n_maps = N_LANDMARKS if c.prior_loss == "landmarks" else 0
        self.nets = {
            "coarse": CoarseSR(c.channels, c.coarse_blocks),
            "encoder": FineEncoder(c.channels, c.encoder_blocks),
            "prior": PriorEstimator(c.prior_channels, c.hourglasses, c.hourglass_depth, n_maps),
            "decoder": FineDecoder(c.channels, c.prior_channels, c.decoder_blocks),
        }
        if c.variant == "fsrgan":  # conditional D: the image beside the bicubic input
            self.nets["d"] = SRGANDiscriminator(64, c.d_channels, c.d_fc, in_ch=6)
        self.to(self.device)
        g_params = [p for k in GENERATOR for p in self.nets[k].parameters()]
        self.optimizers = {"g": torch.optim.RMSprop(g_params, lr=c.lr)}
        if "d" in self.nets:
            self.optimizers["d"] = torch.optim.RMSprop(self.nets["d"].parameters(), lr=c.lr)

    def stages(self) -> list[Stage]:
        needs = ("hr", "lr_artificial") + ((LANDMARKS,) if self.config.prior_loss == "landmarks" else ())
        return [Stage("train", self.config.iterations, needs, self.config.batch_size)]

    # ----- forward and losses --------------------------------------------------------------------
    def forward(self, up: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Bicubic input ``(N,3,64,64)`` in [-1,1] -> ``coarse`` and ``fine`` ``(N,3,64,64)`` in
        [-1,1] (unclamped) and ``maps`` ``(N,5,32,32)`` predicted heatmaps (``None`` without a
        prior loss)."""
        coarse = self.nets["coarse"](up)
        prior, maps = self.nets["prior"](coarse)
        fine = self.nets["decoder"](self.nets["encoder"](coarse), prior)
        return {"coarse": coarse, "fine": fine, "maps": maps}

    def generator_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``mse_coarse``, ``mse_fine``, ``prior`` (landmarks), ``adv`` (fsrgan) and their weighted
        ``total``; also ``fine`` and ``up`` (both [-1,1]) for the D step."""
        c = self.config
        hr = unit_to_signed(batch.hr)
        up = bicubic(batch.lr_artificial)
        out = self.forward(up)
        losses = {"mse_coarse": F.mse_loss(out["coarse"], hr), "mse_fine": F.mse_loss(out["fine"], hr)}
        total = losses["mse_coarse"] + losses["mse_fine"]
        if out["maps"] is not None:
            if batch.landmarks is None:
                raise ValueError("fsrnet: prior_loss=landmarks needs Batch.landmarks (HR landmarks)")
            target = landmark_heatmaps(batch.landmarks, out["maps"].shape[-1], hr.shape[-1], c.heatmap_sigma)
            losses["prior"] = F.mse_loss(out["maps"], target)
            total = total + c.prior_weight * losses["prior"]
        if "d" in self.nets:
            losses["adv"] = bce_real(self.nets["d"](torch.cat([out["fine"], up], 1)))
            total = total + c.adv_weight * losses["adv"]
        return {**losses, "total": total, "fine": out["fine"], "up": up}

    def discriminator_loss(self, hr: torch.Tensor, fine: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """BCE(D(hr, up), 1) + BCE(D(sg fine, up), 0); every image ``(N,3,64,64)`` in [-1,1]."""
        d = self.nets["d"]
        return bce_real(d(torch.cat([hr, up], 1))) + bce_fake(d(torch.cat([fine.detach(), up], 1)))

    # ----- training ------------------------------------------------------------------------------
    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        if stage != "train":
            raise ValueError(f"fsrnet has one stage 'train', got {stage!r}")
        self.train()
        gan = "d" in self.nets
        if gan:
            self.nets["d"].requires_grad_(False)  # the G step leaves D's parameters without gradient
        self.zero_grad()
        losses = self.generator_losses(batch)
        losses["total"].backward()
        self.optimizers["g"].step()
        logged = {k: v.item() for k, v in losses.items() if k not in ("fine", "up")}
        if gan:
            self.nets["d"].requires_grad_(True)
            self.zero_grad()
            d_loss = self.discriminator_loss(unit_to_signed(batch.hr), losses["fine"], losses["up"])
            d_loss.backward()
            self.optimizers["d"].step()
            logged["d"] = d_loss.item()
        return logged

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        fine = self.forward(bicubic(lr.to(self.device)))["fine"]
        return signed_to_unit(fine).clamp(0, 1)
