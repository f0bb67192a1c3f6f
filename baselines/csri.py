"""CSRI (Cheng, Zhu, Gong, ACCV 2018, "Low-Resolution Face Recognition"): Complement
Super-Resolution and Identity joint learning.

One SR network and one recognition network, shared by two branches:

- synthetic: ``phi_sr(DS(hr))`` with a pixel loss to ``hr`` and an identity loss (softmax
  cross-entropy over the HR set's identities) on the SR face through ``phi_fr``;
- genuine: ``phi_sr(x_g)`` of identity-labelled genuine LR faces with the identity loss alone (no
  HR exists), over the genuine-LR set's own identities.

The two sets hold different people, so the recogniser has two softmax heads on its one 512-d
embedding: CentreFace's own ``classifier`` (HR identities) and ``lr_head`` (genuine-LR
identities). Only the paper's abstract and introduction could be read; every fill-in and
deviation is listed in baselines/README.md, "CSRI".

Networks: ``phi_sr`` (SRResNet, deployed), ``phi_fr`` (CentreFace, as CR's phi_fr), ``lr_head``
(absent in variant ``synthetic``, which drops the genuine branch). Stages: ``pretrain_sr`` (pixel
loss), ``pretrain_fr`` (softmax on HR faces), ``csri`` (both branches, every net trained).
Images are [-1,1] inside (the interface's [0,1] is converted here).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lrfacebench.methods.base import LR_IDENTITY, Batch, Method, MethodConfig, Stage
from lrfacebench.methods.cr_config import PAPER_ITERATIONS, CRConfig
from lrfacebench.nn.centreface import CentreFace
from lrfacebench.nn.srgan import SRResNet
from lrfacebench.pixels import signed_to_unit, unit_to_signed


@dataclass
class CSRIConfig(MethodConfig):
    n_lr_identities: int = 0  # set by the trainer from the genuine-LR set's identities
    genuine_branch: bool = True  # variant "synthetic": False (no genuine-LR identity branch)
    # SR network: SRResNet, the SRGAN baseline's generator (CR's phi_sr is its 12/3/2 adaptation)
    sr_blocks: int = 16
    sr_channels: int = 64
    # recogniser: CentreFace, as CR's phi_fr
    feat_dim: int = 512
    fr_widths: tuple[int, ...] = (32, 64, 128, 256)
    # schedule (fill-ins: CR's stage-1 SR and FR budgets for the pre-training, its stage 2 for CSRI)
    sr_iterations: int = PAPER_ITERATIONS["stage1_sr"]
    fr_iterations: int = PAPER_ITERATIONS["stage1_fr"]
    iterations: int = PAPER_ITERATIONS["stage2"]
    batch_size: int = 16  # per branch
    fr_batch_size: int = 16
    # optimisers (CR's): Adam for phi_sr, SGD for phi_fr and its heads
    lr: float = CRConfig.lr
    betas: tuple[float, float] = CRConfig.betas
    fr_lr: float = CRConfig.fr_lr
    fr_momentum: float = CRConfig.fr_momentum
    fr_weight_decay: float = CRConfig.fr_weight_decay
    # loss weights: pixel (mse, [-1,1]) + identity_weight * (synthetic CE + genuine_weight * genuine CE)
    identity_weight: float = 1e-3
    genuine_weight: float = 1.0


class CSRI(Method):
    name = "csri"
    summary = ("CSRI (Cheng et al., ACCV 2018): SRResNet + CentreFace trained jointly, pixel + identity "
               "loss on DS(HR) pairs and identity loss on identity-labelled genuine LR")
    Config = CSRIConfig
    presets = {
        "paper": {},
        # SRResNet at 8 blocks x 32 channels (about a sixth of its FLOPs), the real CentreFace; ~6 min
        "cpu": {"sr_blocks": 8, "sr_channels": 32, "sr_iterations": 500, "fr_iterations": 300,
                "iterations": 200, "lr": 5e-4},
        "smoke": {"sr_blocks": 2, "sr_channels": 16, "feat_dim": 32, "fr_widths": (8, 8, 16, 16),
                  "sr_iterations": 10, "fr_iterations": 6, "iterations": 6, "batch_size": 4,
                  "fr_batch_size": 4, "lr": 1e-3},
    }
    variants = {"default": {}, "synthetic": {"genuine_branch": False}}
    deployed = ("phi_sr",)

    def __init__(self, config: CSRIConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        nets: dict[str, nn.Module] = {"phi_sr": SRResNet(c.sr_blocks, c.sr_channels),
                                      "phi_fr": CentreFace(c.n_identities, c.feat_dim, c.fr_widths)}
        if c.genuine_branch and c.n_lr_identities > 0:  # 0: built for inference or a dry run only
            nets["lr_head"] = nn.Linear(c.feat_dim, c.n_lr_identities)
        self.nets = {k: v.to(self.device) for k, v in nets.items()}
        fr_params = [p for k in ("phi_fr", "lr_head") if k in self.nets for p in self.nets[k].parameters()]
        self.optimizers = {
            "phi_sr": torch.optim.Adam(self.nets["phi_sr"].parameters(), lr=c.lr, betas=c.betas),
            "phi_fr": torch.optim.SGD(fr_params, lr=c.fr_lr, momentum=c.fr_momentum,
                                      weight_decay=c.fr_weight_decay)}

    def stages(self) -> list[Stage]:
        c = self.config
        joint = ("hr", "lr_artificial", "identity") + (("lr_genuine", LR_IDENTITY) if c.genuine_branch else ())
        return [Stage("pretrain_sr", c.sr_iterations, ("hr", "lr_artificial"), c.batch_size),
                Stage("pretrain_fr", c.fr_iterations, ("hr", "identity"), c.fr_batch_size),
                Stage("csri", c.iterations, joint, c.batch_size)]

    # ----- losses ------------------------------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The CSRI terms of one batch, both branches through one pass of each shared net.

        ``batch``: ``hr`` ``(B,3,64,64)`` and ``lr_artificial`` ``(B,3,16,16)`` float in [0,1],
        ``identity`` ``(B,)`` HR identities; in the genuine branch also ``lr_genuine``
        ``(B',3,16,16)`` in [0,1] and ``lr_identity`` ``(B',)`` genuine-LR identities. Returns 0-d
        tensors ``pixel`` (mse of ``phi_sr(DS(hr))`` to ``hr``, in [-1,1]), ``id_hr``
        (cross-entropy of the SR faces' HR identities, CentreFace's head), ``id_lr`` (that of the
        genuine faces' identities, ``lr_head``; genuine branch only) and the weighted ``total``.
        """
        c = self.config
        x = batch.lr_artificial if not c.genuine_branch else torch.cat([batch.lr_artificial, batch.lr_genuine])
        sr = self.nets["phi_sr"](unit_to_signed(x))
        feat = self.nets["phi_fr"].embed(sr)
        n = len(batch.lr_artificial)
        out = {"pixel": F.mse_loss(sr[:n], unit_to_signed(batch.hr)),
               "id_hr": F.cross_entropy(self.nets["phi_fr"].classify(feat[:n]), self._labels(batch.identity, "hr"))}
        identity = out["id_hr"]
        if c.genuine_branch:
            out["id_lr"] = F.cross_entropy(self.nets["lr_head"](feat[n:]), self._labels(batch.lr_identity, "lr"))
            identity = identity + c.genuine_weight * out["id_lr"]
        out["total"] = out["pixel"] + c.identity_weight * identity
        return out

    def _labels(self, ids: torch.Tensor, kind: str) -> torch.Tensor:
        """``(N,)`` int64 identities of the ``hr`` or genuine ``lr`` set, checked against its head."""
        n = self.config.n_identities if kind == "hr" else self.config.n_lr_identities
        ids = ids.to(self.device)
        if n < 2 or int(ids.min()) < 0 or int(ids.max()) >= n:
            field = "n_identities" if kind == "hr" else "n_lr_identities"
            raise ValueError(f"csri: {kind} identities must lie in [0, {field}={n}) with {field} >= 2; "
                             f"got labels [{int(ids.min())}, {int(ids.max())}]")
        return ids

    # ----- training ----------------------------------------------------------------------------
    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        self.train()
        if stage == "pretrain_sr":
            sr = self.nets["phi_sr"](unit_to_signed(batch.lr_artificial))
            terms = {"pixel": F.mse_loss(sr, unit_to_signed(batch.hr))}
            self._step(terms["pixel"], "phi_sr")
        elif stage == "pretrain_fr":
            fr = self.nets["phi_fr"]
            terms = {"id_hr": F.cross_entropy(fr.classify(fr.embed(unit_to_signed(batch.hr))),
                                              self._labels(batch.identity, "hr"))}
            self._step(terms["id_hr"], "phi_fr")
        elif stage == "csri":
            terms = self.losses(batch)
            self._step(terms["total"], "phi_sr", "phi_fr")
        else:
            raise ValueError(f"csri: unknown stage {stage!r}; stages are {[s.name for s in self.stages()]}")
        return {k: v.item() for k, v in terms.items()}

    def _step(self, loss: torch.Tensor, *optimizers: str) -> None:
        self.zero_grad()
        loss.backward()
        for name in optimizers:
            self.optimizers[name].step()

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        sr = self.nets["phi_sr"](unit_to_signed(lr.to(self.device)))
        return signed_to_unit(sr).clamp(0, 1)
