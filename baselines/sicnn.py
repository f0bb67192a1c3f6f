"""SICNN (Zhang et al., ECCV 2018): a hallucination CNN trained with a super-identity loss.

Reference read (not copied): the Caffe prototxts and solver of thu-scc/ASC19-FaceSR-SICNN
(``code/cnnh.prototxt``, ``sicnn_caffe/sicnn.prototxt``, ``*_solver.prototxt``, the alternation in
``sicnn_caffe/caffe/src/caffe/solver.cpp``); the paper's abstract and introduction. Every
fill-in and deviation is listed in baselines/README.md, "SICNN".

Networks: ``cnn_h`` (:class:`HallucinationNet`, CNN-H, deployed), ``phi_fr`` (CentreFace, the
recogniser, as CR's phi_fr) and ``centre_loss`` (its class centres). Stages:

- ``fr``: CentreFace on the HR identities (softmax + centre loss), as CR's ``stage1_fr``. Left out
  when ``recognizer=RUN[:NET]`` names a trained one, which the trainer loads into ``phi_fr``.
- ``pretrain``: CNN-H by the pixel loss alone.
- ``sicnn``: CNN-H by ``pixel + si_weight * super-identity`` through ``phi_fr`` frozen (no
  gradient into it, eval mode). Variant ``domain_integrated`` (the paper's training) first runs
  a recogniser step on HR and detached SR faces in each iteration.

Images are [-1,1] inside (the interface's [0,1] is converted here).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage
from lrfacebench.methods.cr_config import PAPER_ITERATIONS, CRConfig
from lrfacebench.nn.centreface import CentreFace, CentreLoss
from lrfacebench.nn.losses import no_param_grad
from lrfacebench.pixels import signed_to_unit, unit_to_signed


def _conv(in_ch: int, out_ch: int, k: int = 3) -> nn.Sequential:
    """conv kxk (same size) + per-channel PReLU, as every CNN-H layer but the last."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, k, padding=k // 2), nn.PReLU(out_ch))


class DenseBlock(nn.Module):
    """conv3x3 ``in_ch -> channels``, then ``layers`` conv3x3 layers of ``growth`` channels, each
    reading the concatenation of everything before it (PReLU after each conv, no batch norm).

    ``(N,in_ch,H,W)`` -> ``(N, channels + layers * growth, H, W)``.
    """

    def __init__(self, in_ch: int, channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.head = _conv(in_ch, channels)
        self.layers = nn.ModuleList(_conv(channels + i * growth, growth) for i in range(layers))
        self.out_channels = channels + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class HallucinationNet(nn.Module):
    """CNN-H: ``(N,3,16,16)`` in [-1,1] -> ``(N,3,16*2**len(up_kernels),...)`` in [-1,1] (tanh).

    One stage per x2: a dense block, then a stride-2 transposed conv (kernel ``up_kernels[i]``,
    the dense block's width in and out) + PReLU; then a reconstruction dense block of
    ``recon_layers`` layers and conv5x5 -> 3, tanh. The defaults are the reference prototxt's
    widths (64, growth 32, 6 layers: 256 channels) with its first two up-stages (x4);
    ``up_kernels=(3, 5, 5)`` is its x8 network.
    """

    def __init__(self, channels: int = 64, growth: int = 32, layers: int = 6, recon_layers: int = 2,
                 up_kernels: tuple[int, ...] = (3, 5)) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        in_ch = 3
        for k in up_kernels:
            block = DenseBlock(in_ch, channels, growth, layers)
            width = block.out_channels
            stages += [block, nn.ConvTranspose2d(width, width, k, 2, k // 2, output_padding=1), nn.PReLU(width)]
            in_ch = width
        recon = DenseBlock(in_ch, channels, growth, recon_layers)
        self.body = nn.Sequential(*stages, recon, nn.Conv2d(recon.out_channels, 3, 5, padding=2), nn.Tanh())
        for m in self.modules():  # Caffe's "xavier" filler: U(+-sqrt(3 / fan_in)), zero bias
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Caffe's EuclideanLoss: ``1/(2N) sum_i ||a_i - b_i||^2`` over a batch of N (any shape)."""
    return 0.5 * (a - b).pow(2).flatten(1).sum(1).mean()


def super_identity(feat_sr: torch.Tensor, feat_hr: torch.Tensor) -> torch.Tensor:
    """Super-identity loss: :func:`euclidean` between ``(N,D)`` features projected onto the unit
    hypersphere (L2-normalised); in [0, 2]."""
    return euclidean(F.normalize(feat_sr, dim=1), F.normalize(feat_hr, dim=1))


@dataclass
class SICNNConfig(MethodConfig):
    # recogniser: another run's net (RUN[:NET], default net phi_fr), or "" to train one (stage fr)
    recognizer: str = ""
    # CNN-H (reference prototxt)
    channels: int = 64
    growth: int = 32
    dense_layers: int = 6
    recon_layers: int = 2
    # recogniser: CentreFace as CR's phi_fr, trained as CR's stage1_fr
    feat_dim: int = 512
    fr_widths: tuple[int, ...] = (32, 64, 128, 256)
    fr_iterations: int = PAPER_ITERATIONS["stage1_fr"]
    fr_batch_size: int = 16
    fr_lr: float = CRConfig.fr_lr
    fr_momentum: float = CRConfig.fr_momentum
    fr_weight_decay: float = CRConfig.fr_weight_decay
    centre_weight: float = CRConfig.centre_weight
    centre_lr: float = CRConfig.centre_lr
    # pre-training of CNN-H by the pixel loss (cnnh_solver.prototxt: RMSProp, step schedule)
    pretrain_iterations: int = 200_000
    pretrain_batch_size: int = 48
    pretrain_lr: float = 2.5e-4
    pretrain_rms_decay: float = 0.99
    pretrain_weight_decay: float = 2e-4
    pretrain_lr_step: int = 4000
    pretrain_lr_gamma: float = 0.85
    # SICNN stage (sicnn_solver.prototxt: SGD 0.01, momentum 0.9, x0.8 every 6000 of 60,000
    # solver iterations, which alternate between the nets: 30,000 updates of each, step 3000)
    iterations: int = 30_000
    batch_size: int = 40
    lr: float = 1e-5  # 0.01 x the prototxt's pixel loss weight 0.001 (our pixel weight is 1)
    momentum: float = 0.9
    lr_step: int = 3000
    lr_gamma: float = 0.8
    si_weight: float = 10.0  # the prototxt's 0.01 (super-identity) / 0.001 (pixel)
    domain_integrated: bool = False  # variant: recogniser steps on HR + SR between CNN-H steps


class SICNN(Method):
    name = "sicnn"
    summary = ("SICNN (Zhang et al., ECCV 2018): dense-block CNN-H, pixel + super-identity loss "
               "through a frozen CentreFace trained on the HR identities")
    Config = SICNNConfig
    presets = {
        "paper": {},
        # CNN-H at quarter width (64-channel up-sampling, 1/16 of the paper's FLOPs), lr 1e-3
        # RMSProp pre-training, no lr steps; under 10 minutes on one shared core
        "cpu": {"channels": 16, "growth": 8, "fr_iterations": 300, "pretrain_iterations": 400,
                "pretrain_batch_size": 16, "pretrain_lr": 1e-3, "pretrain_lr_step": 100_000,
                "iterations": 100, "batch_size": 16, "lr_step": 100_000},
        "smoke": {"channels": 8, "growth": 4, "dense_layers": 2, "recon_layers": 1, "feat_dim": 32,
                  "fr_widths": (8, 8, 16, 16), "fr_iterations": 4, "fr_batch_size": 4,
                  "pretrain_iterations": 10, "pretrain_batch_size": 4, "pretrain_lr": 1e-3,
                  "iterations": 6, "batch_size": 4},
    }
    variants = {"default": {}, "domain_integrated": {"domain_integrated": True}}
    deployed = ("cnn_h",)

    def __init__(self, config: SICNNConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        self.nets = {k: v.to(self.device) for k, v in {
            "cnn_h": HallucinationNet(c.channels, c.growth, c.dense_layers, c.recon_layers),
            "phi_fr": CentreFace(c.n_identities, c.feat_dim, c.fr_widths),
            "centre_loss": CentreLoss(c.n_identities, c.feat_dim)}.items()}
        self.optimizers = {
            "phi_fr": torch.optim.SGD(self.nets["phi_fr"].parameters(), lr=c.fr_lr, momentum=c.fr_momentum,
                                      weight_decay=c.fr_weight_decay),
            "centre_loss": torch.optim.SGD(self.nets["centre_loss"].parameters(), lr=c.centre_lr),
            "cnn_h_pretrain": torch.optim.RMSprop(self.nets["cnn_h"].parameters(), lr=c.pretrain_lr,
                                                  alpha=c.pretrain_rms_decay,
                                                  weight_decay=c.pretrain_weight_decay),
            # the prototxt's CNN-H layers have decay_mult 0 in the SICNN stage
            "cnn_h": torch.optim.SGD(self.nets["cnn_h"].parameters(), lr=c.lr, momentum=c.momentum)}
        self._active: tuple[str, ...] = ()

    # ----- stages and modes ----------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        c, pairs = self.config, ("hr", "lr_artificial")
        out = [] if c.recognizer else [Stage("fr", c.fr_iterations, ("hr", "identity"), c.fr_batch_size)]
        return out + [Stage("pretrain", c.pretrain_iterations, pairs, c.pretrain_batch_size),
                      Stage("sicnn", c.iterations, pairs + (("identity",) if c.domain_integrated else ()),
                            c.batch_size)]

    def external_nets(self) -> dict[str, str]:
        return {"phi_fr": self.config.recognizer} if self.config.recognizer else {}

    def load_external(self, net: str, state: Mapping[str, torch.Tensor]) -> None:
        """The recogniser's weights; its softmax head only if it has this run's identities (the
        default variant never uses it; ``domain_integrated`` trains a fresh one otherwise)."""
        own = self.nets[net].state_dict()
        fits = all(k in state and state[k].shape == v.shape for k, v in own.items() if k.startswith("classifier."))
        keep = {k: v for k, v in state.items() if fits or not k.startswith("classifier.")}
        result = self.nets[net].load_state_dict(keep, strict=False)
        wrong = [k for k in result.missing_keys + result.unexpected_keys if not k.startswith("classifier.")]
        if wrong:
            raise RuntimeError(f"sicnn: the recogniser does not fit this config's phi_fr "
                               f"(feat_dim, fr_widths); keys {wrong[:4]}")

    def train(self, mode: bool = True) -> "SICNN":
        """Train/eval mode; a net the current step does not train is always in eval mode."""
        for name, net in self.nets.items():
            net.train(mode and name in self._active)
        return self

    def _enter(self, *active: str) -> None:
        """Train ``active`` from here on; every other net is in eval mode."""
        self._active = active
        self.train()

    def _step(self, opt: str, loss: torch.Tensor) -> None:
        self.zero_grad()
        loss.backward()
        self.optimizers[opt].step()

    # ----- losses ----------------------------------------------------------------------------------
    def fr_losses(self, y: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """CentreFace terms on ``(N,3,64,64)`` [-1,1] faces with identities ``ids`` ``(N,)``:
        softmax cross-entropy, centre loss, and their weighted sum ``fr``."""
        feat = self.nets["phi_fr"].embed(y)
        out = {"fr_softmax": F.cross_entropy(self.nets["phi_fr"].classify(feat), ids),
               "fr_centre": self.nets["centre_loss"](feat, ids)}
        out["fr"] = out["fr_softmax"] + self.config.centre_weight * out["fr_centre"]
        return out

    def sr_losses(self, batch: Batch, identity: bool) -> dict[str, torch.Tensor]:
        """``sr`` (``(N,3,64,64)`` [-1,1]), ``pixel`` (:func:`euclidean` to HR) and, if
        ``identity``, ``si`` (:func:`super_identity` through phi_fr, no gradient into phi_fr's
        parameters; HR features are constants) and the weighted ``total``."""
        hr = unit_to_signed(batch.hr)
        sr = self.nets["cnn_h"](unit_to_signed(batch.lr_artificial))
        out = {"sr": sr, "pixel": euclidean(sr, hr)}
        out["total"] = out["pixel"]
        if identity:
            phi_fr = self.nets["phi_fr"]
            with torch.no_grad():
                feat_hr = phi_fr.embed(hr)
            with no_param_grad(phi_fr):
                out["si"] = super_identity(phi_fr.embed(sr), feat_hr)
            out["total"] = out["pixel"] + self.config.si_weight * out["si"]
        return out

    # ----- training --------------------------------------------------------------------------------
    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        handlers = {"fr": self._step_fr, "pretrain": self._step_pretrain, "sicnn": self._step_sicnn}
        if stage not in {s.name for s in self.stages()}:
            raise ValueError(f"sicnn: unknown stage {stage!r}; stages are {[s.name for s in self.stages()]}")
        return handlers[stage](batch, step)

    def _identities(self, batch: Batch) -> torch.Tensor:
        ids = batch.identity.to(self.device)
        if self.config.n_identities < 2 or int(ids.min()) < 0 or int(ids.max()) >= self.config.n_identities:
            raise ValueError(f"sicnn: the recogniser trains on HR identities in [0, n_identities="
                             f"{self.config.n_identities}) (n_identities >= 2); got labels "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        return ids

    def _fr_update(self, y: torch.Tensor, ids: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
        """One recogniser step (phi_fr and its centres, CR's stage1_fr rule) on [-1,1] faces."""
        self._enter("phi_fr", "centre_loss")
        for group in self.optimizers["phi_fr"].param_groups:
            group["lr"] = lr
        terms = self.fr_losses(y, ids)
        self.zero_grad()
        terms["fr"].backward()
        self.optimizers["phi_fr"].step()
        # centres move by centre_lr * d(centre loss)/dc whatever centre_weight is (KaiyangZhou)
        self.nets["centre_loss"].centres.grad.mul_(1.0 / self.config.centre_weight)
        self.optimizers["centre_loss"].step()
        return terms

    def _step_fr(self, batch: Batch, step: int) -> dict[str, float]:
        terms = self._fr_update(unit_to_signed(batch.hr), self._identities(batch), self.config.fr_lr)
        return {k: v.item() for k, v in terms.items()}

    def _step_pretrain(self, batch: Batch, step: int) -> dict[str, float]:
        c = self.config
        lr = c.pretrain_lr * c.pretrain_lr_gamma ** (step // c.pretrain_lr_step)
        for group in self.optimizers["cnn_h_pretrain"].param_groups:
            group["lr"] = lr
        self._enter("cnn_h")
        losses = self.sr_losses(batch, identity=False)
        self._step("cnn_h_pretrain", losses["pixel"])
        return {"pixel": losses["pixel"].item(), "lr": lr}

    def _step_sicnn(self, batch: Batch, step: int) -> dict[str, float]:
        c = self.config
        decay = c.lr_gamma ** (step // c.lr_step)
        out: dict[str, float] = {}
        if c.domain_integrated:  # recogniser step on HR and detached SR, labels twice (sicnn.prototxt)
            ids = self._identities(batch)
            with torch.no_grad():
                sr = self.nets["cnn_h"](unit_to_signed(batch.lr_artificial))
            terms = self._fr_update(torch.cat([unit_to_signed(batch.hr), sr]), torch.cat([ids, ids]),
                                    c.fr_lr * decay)
            out.update({k: v.item() for k, v in terms.items()})
        for group in self.optimizers["cnn_h"].param_groups:
            group["lr"] = c.lr * decay
        self._enter("cnn_h")  # phi_fr in eval mode: its batch-norm statistics stay as they are
        losses = self.sr_losses(batch, identity=True)
        self._step("cnn_h", losses["total"])
        return {**out, **{k: losses[k].item() for k in ("pixel", "si", "total")}, "lr": c.lr * decay}

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        sr = self.nets["cnn_h"](unit_to_signed(lr.to(self.device)))
        return signed_to_unit(sr).clamp(0, 1)
