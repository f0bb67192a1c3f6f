"""SRGAN (Ledig et al., CVPR 2017): SRResNet generator + SRGAN discriminator, two stages.

Reference code read (not copied): sgrvinod/a-PyTorch-Tutorial-to-Super-Resolution
(models.py, train_srresnet.py, train_srgan.py). Trained on artificial pairs only.

Stage ``pretrain``: SRResNet by MSE (the "SRResNet-MSE" initialisation).
Stage ``adversarial``: content loss + 1e-3 * BCE adversarial, G step then D step (detached SR),
lr / 10 halfway. Variants (content loss of the adversarial stage):

- ``mse_adv`` (default) -- **a deviation**: MSE content loss, because the ImageNet VGG19 weights
  of the original loss cannot be fetched offline. The variant name goes into every result row.
- ``vgg19`` -- the paper's loss: MSE between VGG19 phi_5,4 features (after the ReLU, before the
  5th max-pool) of SR and HR, each rescaled by 1/12.75. Needs a user-supplied torchvision
  ``vgg19`` state-dict file (``vgg19_weights``), checked by sha256 before use.

Images are [-1,1] inside (the interface's [0,1] is converted here).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from lrfacebench.io import sha256_file
from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage
from lrfacebench.nn.losses import bce_fake, bce_real
from lrfacebench.nn.srgan import SRGANDiscriminator, SRResNet
from lrfacebench.pixels import signed_to_unit, unit_to_signed
from lrfacebench.weights import WeightError

# torchvision's ImageNet VGG19 (IMAGENET1K_V1) is published as ``vgg19-dcbb9e9d.pth``, whose
# name carries the first 8 hex digits of the file's sha256 (torch.hub checks exactly this prefix).
VGG19_SHA256_PREFIX = "dcbb9e9d"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SRGANConfig(MethodConfig):
    variant: str = "mse_adv"
    n_blocks: int = 16
    channels: int = 64
    d_channels: int = 64
    d_fc: int = 1024
    batch_size: int = 16
    pretrain_iterations: int = 1_000_000  # SRGAN paper: SRResNet, 10^6 updates
    adversarial_iterations: int = 200_000  # 10^5 at lr 1e-4 + 10^5 at 1e-5
    lr: float = 1e-4
    lr_decay_at: float = 0.5  # fraction of the adversarial stage after which lr / 10
    adv_weight: float = 1e-3
    vgg19_weights: str = ""  # path to torchvision vgg19 state dict (variant vgg19)
    vgg19_sha256: str = VGG19_SHA256_PREFIX  # full sha256 or its prefix
    vgg_rescale: float = 1 / 12.75


def load_vgg19_features(path: str, expected_sha256: str) -> nn.Module:
    """torchvision VGG19 ``features`` up to phi_5,4 (conv5_4 + ReLU), weights from ``path``.

    ``path`` is a torchvision ``vgg19`` state dict (its ``features.*`` entries are used; the
    classifier is never built). Raises :class:`WeightError` when the file is missing or its
    sha256 does not start with ``expected_sha256``. The returned module is frozen, in eval mode.
    """
    if not path:
        raise WeightError("srgan variant vgg19 needs vgg19_weights=PATH: a torchvision vgg19 ImageNet "
                          "state dict (vgg19-dcbb9e9d.pth); nothing is downloaded. Use variant "
                          "mse_adv without it.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightError(f"srgan: VGG19 weight file not found: {p}")
    digest = sha256_file(p)
    if not digest.startswith(expected_sha256.lower()):
        raise WeightError(f"srgan: {p} has sha256 {digest}, expected {expected_sha256}… "
                          "(torchvision vgg19 IMAGENET1K_V1); set vgg19_sha256 if you use another file")
    state = torch.load(p, map_location="cpu", weights_only=True)
    features = make_layers(cfgs["E"])  # torchvision's vgg19().features, same module indices
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                              if k.startswith("features.")}, strict=True)
    features = features[:36].eval()  # index 34 = conv5_4, 35 = its ReLU, 36 = 5th max-pool
    features.requires_grad_(False)
    return features


class SRGAN(Method):
    name = "srgan"
    summary = ("SRGAN: SRResNet-16 + SRGAN D, MSE pre-training then adversarial; default variant "
               "mse_adv replaces the VGG19 content loss by MSE (deviation)")
    Config = SRGANConfig
    presets = {
        "paper": {},
        # real networks; ~10 minutes on 2 cores
        "cpu": {"pretrain_iterations": 300, "adversarial_iterations": 150},
        "smoke": {"n_blocks": 2, "channels": 16, "d_channels": 8, "d_fc": 64, "batch_size": 8,
                  "pretrain_iterations": 30, "adversarial_iterations": 10},
    }
    variants = {"mse_adv": {}, "vgg19": {}}  # the variant alone selects the content loss
    deployed = ("g",)

    @classmethod
    def make_config(cls, preset: str = "paper", variant: str = "default", *layers) -> SRGANConfig:
        """As :meth:`Method.make_config`; ``default`` means ``mse_adv``, so that the variant name
        recorded in the run (and every result row) says that the content loss is a deviation."""
        return super().make_config(preset, "mse_adv" if variant == "default" else variant, *layers)

    def __init__(self, config: SRGANConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        if config.variant not in self.variants:
            raise ValueError(f"srgan: unknown variant {config.variant!r}; choose from {sorted(self.variants)}")
        self.vgg = (load_vgg19_features(config.vgg19_weights, config.vgg19_sha256).to(self.device)
                    if config.variant == "vgg19" else None)
        self.nets["g"] = SRResNet(config.n_blocks, config.channels).to(self.device)
        self.nets["d"] = SRGANDiscriminator(64, config.d_channels, config.d_fc).to(self.device)
        adam = lambda net: torch.optim.Adam(net.parameters(), lr=config.lr)  # noqa: E731
        # the adversarial stage starts a fresh Adam from the pre-trained weights, as train_srgan.py
        self.optimizers = {"g_pretrain": adam(self.nets["g"]), "g": adam(self.nets["g"]),
                           "d": adam(self.nets["d"])}

    def stages(self) -> list[Stage]:
        c, needs = self.config, ("hr", "lr_artificial")
        return [Stage("pretrain", c.pretrain_iterations, needs, c.batch_size),
                Stage("adversarial", c.adversarial_iterations, needs, c.batch_size)]

    # ----- losses (each returns tensors; train_step owns the optimiser steps) ----------------
    def content(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Content loss between ``(N,3,64,64)`` [-1,1] images: MSE, or MSE of rescaled VGG19 features."""
        if self.vgg is None:
            return F.mse_loss(sr, hr)
        mean = torch.tensor(IMAGENET_MEAN, device=sr.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=sr.device).view(1, 3, 1, 1)
        phi = lambda x: self.vgg((signed_to_unit(x) - mean) / std) * self.config.vgg_rescale  # noqa: E731
        return F.mse_loss(phi(sr), phi(hr).detach())

    def generator_losses(self, batch: Batch, adversarial: bool) -> dict[str, torch.Tensor]:
        """``mse`` (always), plus ``content``, ``adv`` and the weighted ``total`` when adversarial.
        Also returns the SR output (``sr``, [-1,1]) for the D step."""
        hr = unit_to_signed(batch.hr)
        sr = self.nets["g"](unit_to_signed(batch.lr_artificial))
        out = {"sr": sr, "mse": F.mse_loss(sr, hr)}
        if adversarial:
            out["content"] = out["mse"] if self.vgg is None else self.content(sr, hr)
            out["adv"] = bce_real(self.nets["d"](sr))
            out["total"] = out["content"] + self.config.adv_weight * out["adv"]
        else:
            out["total"] = out["mse"]
        return out

    def discriminator_loss(self, hr: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
        """BCE(D(hr),1) + BCE(D(sg sr),0); ``hr``, ``sr`` in [-1,1]."""
        d = self.nets["d"]
        return bce_real(d(hr)) + bce_fake(d(sr.detach()))

    # ----- training ---------------------------------------------------------------------------
    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        self.train()
        if stage == "pretrain":
            opt = self.optimizers["g_pretrain"]
            self.zero_grad()
            losses = self.generator_losses(batch, adversarial=False)
            losses["total"].backward()
            opt.step()
            return {"mse": losses["mse"].item()}
        if stage != "adversarial":
            raise ValueError(f"srgan has stages pretrain|adversarial, got {stage!r}")
        c = self.config
        lr = c.lr * (0.1 if step >= c.lr_decay_at * c.adversarial_iterations else 1.0)
        for opt in (self.optimizers["g"], self.optimizers["d"]):
            for group in opt.param_groups:
                group["lr"] = lr
        # generator step (D frozen so that its parameters collect no gradient)
        self.nets["d"].requires_grad_(False)
        self.zero_grad()
        losses = self.generator_losses(batch, adversarial=True)
        losses["total"].backward()
        self.optimizers["g"].step()
        self.nets["d"].requires_grad_(True)
        # discriminator step on the detached SR
        self.zero_grad()
        d_loss = self.discriminator_loss(unit_to_signed(batch.hr), losses["sr"])
        d_loss.backward()
        self.optimizers["d"].step()
        return {"mse": losses["mse"].item(), "content": losses["content"].item(),
                "adv": losses["adv"].item(), "g_total": losses["total"].item(),
                "d": d_loss.item(), "lr": lr}

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        sr = self.nets["g"](unit_to_signed(lr.to(self.device)))
        return signed_to_unit(sr).clamp(0, 1)
