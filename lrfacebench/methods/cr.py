"""Characteristic Regularisation (CR; Cheng, Zhu, Gong, WACV 2020), as specified in methods.md §1.

Genuine LR x_g --phi_cr--> regulated LR r (artificial-LR characteristics) --phi_sr--> 64x64 SR.
Images are in [-1,1] inside the method, ``(N,3,16,16)`` / ``(N,3,64,64)`` float in [0,1] at the
:class:`~lrfacebench.methods.base.Method` interface.

Networks (``self.nets``):

- ``phi_cr``, ``phi_cr_tilde`` (:class:`~lrfacebench.nn.cr.PhiCR`, 16->16): genuine->artificial
  and artificial->pseudo-genuine;
- ``D``, ``D_tilde`` (SNGAN ResNet, 16x16 -> logit): artificial vs regulated / genuine vs
  pseudo-genuine;
- ``phi_sr`` (:class:`~lrfacebench.nn.cr.PhiSR`, 16->64), ``D_sr`` (SRGAN's D, stage 1 only);
- ``phi_fr`` (CentreFace) with ``centre_loss`` (its class centres), then frozen; ``D_prime`` (5 FC
  layers on 512-d phi_fr features, Eq. 8).

Stages (stage 1's three parts are independent, so running them one after the other is the
paper's "in parallel"): ``stage1_sr`` (Eq. 1 on (y, x_a = DS(y))), ``stage1_fr`` (CentreFace on HR
identities), ``stage1_cc`` (a D~, phi~_cr, D and phi_cr step per iteration: Eq. 5, 3, 6 on unpaired
x_a and x_g), ``stage2`` (Eq. 9 over phi_cr and phi_sr with one Adam, then a D and a D' step).
The loss terms are in :mod:`lrfacebench.methods.cr_losses`, the options and presets in
:mod:`lrfacebench.methods.cr_config`; every fill-in and departure from the paper is listed, with
its reason, in docs/cr.md.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lrfacebench.methods.base import Batch, Method, Stage
from lrfacebench.methods.cr_config import CR_PRESETS, CR_VARIANTS, CRConfig
from lrfacebench.methods.cr_losses import CRLosses
from lrfacebench.metrics.residual import residual_stats
from lrfacebench.nn.blocks import MLPDiscriminator
from lrfacebench.nn.centreface import CentreFace, CentreLoss
from lrfacebench.nn.cr import PhiCR, PhiSR
from lrfacebench.nn.sngan import SNResNetDiscriminator
from lrfacebench.nn.srgan import SRGANDiscriminator
from lrfacebench.pixels import signed_to_unit, unit_to_signed

log = logging.getLogger(__name__)

# Nets each stage trains; every other net is frozen (requires_grad off) and kept in eval mode.
TRAINED_NETS: dict[str, tuple[str, ...]] = {
    "stage1_sr": ("phi_sr", "D_sr"),
    "stage1_fr": ("phi_fr", "centre_loss"),
    "stage1_cc": ("phi_cr", "phi_cr_tilde", "D", "D_tilde"),
    "stage2": ("phi_cr", "phi_sr", "D", "D_prime"),
}
STAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "stage1_sr": ("hr", "lr_artificial"),
    "stage1_fr": ("hr", "identity"),
    "stage1_cc": ("lr_artificial", "lr_genuine"),
    "stage2": ("hr", "lr_artificial", "lr_genuine"),
}


def _floats(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: v.item() for k, v in terms.items()}


class CR(CRLosses, Method):
    name = "cr"
    summary = "Characteristic Regularisation (Cheng, Zhu, Gong, WACV 2020): phi_sr(phi_cr(x))"
    Config = CRConfig
    presets = CR_PRESETS
    variants = CR_VARIANTS
    deployed = ("phi_cr", "phi_sr")

    def __init__(self, config: CRConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        config.validate()
        c = config
        if not c.use_cr:
            self.deployed = ("phi_sr",)  # W/O CR has no regulariser
        nets: dict[str, nn.Module] = {"phi_sr": PhiSR(), "D_sr": SRGANDiscriminator(in_size=64),
                                      "phi_fr": CentreFace(c.n_identities, feat_dim=512),
                                      "centre_loss": CentreLoss(c.n_identities, feat_dim=512),
                                      "D_prime": MLPDiscriminator((512, 512, 256, 128, 64, 1))}
        if c.use_cr:
            nets["phi_cr"] = PhiCR()
            nets["phi_cr_tilde"] = PhiCR(noise_channels=c.tilde_noise)
            nets["D"] = SNResNetDiscriminator([128] * 6, [True, True] + [False] * 4)
            nets["D_tilde"] = SNResNetDiscriminator([128] * 6, [True, True] + [False] * 4)
        self.nets = {k: v.to(self.device) for k, v in nets.items()}

        def adam(*names: str, lr: float = c.lr) -> torch.optim.Adam:
            params = [p for n in names for p in self.nets[n].parameters()]
            return torch.optim.Adam(params, lr=lr, betas=tuple(c.betas))

        self.optimizers = {
            "phi_sr": adam("phi_sr", lr=c.sr_lr), "D_sr": adam("D_sr", lr=c.sr_lr),
            "phi_fr": torch.optim.SGD(self.nets["phi_fr"].parameters(), lr=c.fr_lr,
                                      momentum=c.fr_momentum, weight_decay=c.fr_weight_decay),
            "centre_loss": torch.optim.SGD(self.nets["centre_loss"].parameters(), lr=c.centre_lr),
            "D_prime": adam("D_prime"),
            # stage 2: one Adam over theta_sr and theta_cr (Eq. 9)
            "G": adam("phi_sr", "phi_cr") if c.use_cr else adam("phi_sr"),
        }
        if c.use_cr:
            self.optimizers.update(phi_cr=adam("phi_cr"), phi_cr_tilde=adam("phi_cr_tilde"),
                                   D=adam("D"), D_tilde=adam("D_tilde"))
        self._stage: str | None = None
        self._grad_norms: dict[str, float] = {}  # the latest gn_* values of this stage
        self._active: set[str] | None = None  # nets trainable in the current stage
        self._training = True

    # ----- mode / freezing ---------------------------------------------------------------------
    def train(self, mode: bool = True) -> "CR":
        """Set train/eval mode; nets frozen in the current stage always stay in eval mode, and so
        do phi_sr's batch-norm layers in stage 2 with ``sr_bn_stage2="frozen"``."""
        self._training = mode
        for name, net in self.nets.items():
            net.train(mode and (self._active is None or name in self._active))
        fixed = [n for n in ("phi_cr", "phi_cr_tilde") if n in self.nets and self.config.cr_bn == "fixed"]
        if self._stage == "stage2" and self.config.sr_bn_stage2 == "frozen":
            fixed.append("phi_sr")
        for name in fixed:
            for module in self.nets[name].modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @contextlib.contextmanager
    def _eval_mode(self, name: str) -> Iterator[nn.Module]:
        """Net ``name`` in eval mode; afterwards every net's mode is set again by :meth:`train`'s
        rules (a plain ``net.train()`` would put fixed batch-norm layers back into batch mode)."""
        net = self.nets[name]
        net.eval()
        try:
            yield net
        finally:
            self.train(self._training)

    def enter_stage(self, stage: str) -> None:
        """Freeze every net ``stage`` does not train (requires_grad off, eval mode). Called by
        :meth:`train_step`; idempotent."""
        if stage not in TRAINED_NETS:
            raise ValueError(f"cr: unknown stage {stage!r}; stages are {list(TRAINED_NETS)}")
        if stage == self._stage:
            return
        self._stage = stage
        self._grad_norms = {}
        self._active = set(TRAINED_NETS[stage]) & set(self.nets)
        for name, net in self.nets.items():
            net.requires_grad_(name in self._active)
        self.train(self._training)
        log.debug("cr: entering %s, training %s", stage, sorted(self._active))

    def _update(self, opt: str, loss: torch.Tensor) -> None:
        """Zero ``opt``'s gradients, back-propagate ``loss``, step ``opt``."""
        optimizer = self.optimizers[opt]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # ----- stages ------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        c = self.config
        plan = [("stage1_sr", c.sr_iterations, c.batch_size),
                ("stage1_fr", c.fr_iterations, c.fr_batch_size)]
        if c.use_cr:
            plan.append(("stage1_cc", c.cc_iterations, c.batch_size))
        if c.joint_finetune:
            plan.append(("stage2", c.joint_iterations, c.batch_size))
        return [Stage(name, iters, STAGE_NEEDS[name], batch) for name, iters, batch in plan]

    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        """One iteration of ``stage`` (``step`` counts from 0 within the stage).

        Returns every loss term (``L_*``, unweighted, batch means) and each discriminator's
        accuracy on the batch (``acc_*``).
        """
        handlers = {"stage1_sr": self._step_sr, "stage1_fr": self._step_fr,
                    "stage1_cc": self._step_cc, "stage2": self._step_joint}
        if stage not in {s.name for s in self.stages()}:
            raise ValueError(f"cr ({self.config.variant}): unknown stage {stage!r}; "
                             f"stages are {[s.name for s in self.stages()]}")
        for stream in STAGE_NEEDS[stage]:
            if getattr(batch, stream) is None:
                raise ValueError(f"cr: stage {stage} needs the batch stream {stream!r}, got None")
        self.enter_stage(stage)
        return handlers[stage](batch, step)

    # ----- steps (the loss terms they combine are in CRLosses) -------------------------------- ---------------------------------------------------------------------------------
    def _step_sr(self, batch: Batch, step: int) -> dict[str, float]:
        """Eq. 1 + 1e-3 adversarial (phi_sr step), then the D_sr step (SRGAN's order).
        With ``sr_adv_weight = 0``: Eq. 1 alone (SRGAN's MSE pre-training), no D_sr step."""
        y, x_a = unit_to_signed(batch.hr), unit_to_signed(batch.lr_artificial)
        for name in ("phi_sr", "D_sr"):
            for group in self.optimizers[name].param_groups:
                group["lr"] = self.sr_learning_rate(step)
        if self.config.sr_adv_weight == 0:
            l_sr = F.mse_loss(self.nets["phi_sr"](x_a), y)
            self._update("phi_sr", l_sr)
            return {"L_sr": l_sr.item()}
        sr, terms = self.sr_generator_losses(y, x_a)
        self._update("phi_sr", terms["L_sr"] + self.config.sr_adv_weight * terms["L_sr_adv"])
        l_d, acc = self.disc_loss("D_sr", y, sr)
        self._update("D_sr", l_d)
        return {**_floats(terms), "L_D_sr": l_d.item(), "acc_D_sr": acc}

    def sr_learning_rate(self, step: int) -> float:
        """Adam lr of phi_sr and D_sr at ``stage1_sr`` step ``step`` (from 0): ``sr_lr``, or with
        ``sr_lr_schedule="cosine"`` ``sr_lr * (1 + cos(pi * step / sr_iterations)) / 2``. A
        function of the step alone, so a resumed run continues the same schedule."""
        c = self.config
        if c.sr_lr_schedule == "constant":
            return c.sr_lr
        return c.sr_lr * 0.5 * (1.0 + math.cos(math.pi * step / max(c.sr_iterations, 1)))

    def _step_fr(self, batch: Batch, step: int) -> dict[str, float]:
        """CentreFace: softmax + centre_weight * centre loss. Every face needs an identity (the
        feeder draws this stage's batches from the labelled HR faces only)."""
        c = self.config
        if c.n_identities < 2:
            raise ValueError("cr: stage1_fr trains phi_fr (CentreFace) on HR identities, but "
                             f"n_identities={c.n_identities}; the HR set needs identity labels")
        ids = batch.identity.to(self.device)
        if int(ids.min()) < 0 or int(ids.max()) >= c.n_identities:
            raise ValueError(f"cr: stage1_fr identities must be in [0, {c.n_identities}), got "
                             f"[{int(ids.min())}, {int(ids.max())}] (unlabelled faces are -1)")
        logits, terms = self.fr_losses(unit_to_signed(batch.hr), ids)
        opt_fr, opt_centre = self.optimizers["phi_fr"], self.optimizers["centre_loss"]
        opt_fr.zero_grad(set_to_none=True)
        opt_centre.zero_grad(set_to_none=True)
        (terms["L_fr_softmax"] + c.centre_weight * terms["L_fr_centre"]).backward()
        opt_fr.step()
        # centres move by centre_lr * d(centre loss)/dc whatever centre_weight is (KaiyangZhou)
        self.nets["centre_loss"].centres.grad.mul_(1.0 / c.centre_weight)
        opt_centre.step()
        acc = float((logits.argmax(1) == ids).float().mean())
        return {**_floats(terms), "acc_fr": acc}

    def _step_cc(self, batch: Batch, step: int) -> dict[str, float]:
        """D~ step, phi~_cr step (Eq. 5), D step (Eq. 3), phi_cr step (Eq. 6), in that order."""
        c = self.config
        x_a, x_g = unit_to_signed(batch.lr_artificial), unit_to_signed(batch.lr_genuine)
        # Eq. 5 (its "max_D" is a typo for D~, methods.md §1.5.3): D~ tells genuine LR (real)
        # from pseudo-genuine phi~_cr(x_a) (fake).
        pseudo = self.nets["phi_cr_tilde"](x_a)
        l_d_t, acc_t = self.disc_loss("D_tilde", x_g, pseudo)
        self._update("D_tilde", l_d_t)
        tilde = self.tilde_generator_losses(x_a, pseudo)
        weighted = {"L_gan_tilde": tilde["L_gan_tilde"], "L_tilde_id": c.tilde_identity_l1 * tilde["L_tilde_id"],
                    "L_tilde_lowpass": c.tilde_lowpass_l1 * tilde["L_tilde_lowpass"]}
        self._measure_grads(step, weighted, "phi_cr_tilde")
        self._update("phi_cr_tilde", sum(weighted.values()))
        out = {"L_D_tilde": l_d_t.item(), "acc_D_tilde": acc_t, **_floats(tilde)}
        if step < c.cc_tilde_warmup:
            return out
        # Eq. 3, D step: artificial LR (real) vs regulated phi_cr(x_g) (fake)
        r = self.nets["phi_cr"](x_g)
        l_d, acc = self.disc_loss("D", x_a, r)
        self._update("D", l_d)
        # Eq. 6, phi_cr step
        cr = self.cr_losses(x_a, x_g, r)
        weights = {"L_cr_rec": c.lambda_rec, "L_gan": c.lambda_gan, "L_cr_lowpass": c.cr_lowpass_l1,
                   "L_cr_identity": c.lambda_identity, "L_cr_common": c.cr_common_hp}
        self._measure_grads(step, {k: w * cr[k] for k, w in weights.items() if k in cr}, "phi_cr")
        self._update("phi_cr", cr["L_cr"])
        return {**out, "L_D": l_d.item(), "acc_D": acc, **_floats(cr), **self._grad_norms}

    def _step_joint(self, batch: Batch, step: int) -> dict[str, float]:
        """Eq. 9 step over phi_sr and phi_cr (one Adam), then a D step (Eq. 3) and a D' step (Eq. 8).

        The D step sees the regulated batch from before this iteration's generator update.
        """
        c = self.config
        y, x_a, x_g = unit_to_signed(batch.hr), unit_to_signed(batch.lr_artificial), unit_to_signed(batch.lr_genuine)
        r, feat_fake, terms = self.joint_losses(y, x_a, x_g)
        weighted = {"L_sr": terms["L_sr"], "L_cr_sr": c.lambda_cr_sr * terms["L_cr_sr"],
                    "L_cr_gan": c.lambda_cr_gan * terms["L_cr_gan"]}
        if c.use_cr:
            weighted["L_cr"] = c.lambda_cr * terms["L_cr"]
        self._measure_grads(step, weighted, *(("phi_sr", "phi_cr") if c.use_cr else ("phi_sr",)))
        self._update("G", terms["L_G"])
        out = {**_floats(terms), **self._grad_norms}
        if self.config.use_cr:  # D keeps training in stage 2 (L_cr contains L_gan, §1.5.7)
            l_d, out["acc_D"] = self.disc_loss("D", x_a, r)
            self._update("D", l_d)
            out["L_D"] = l_d.item()
        with torch.no_grad():  # phi_fr is frozen: D' sees fixed features of y and sg phi_sr(r)
            feat_real = self._fr_features(y, augment=True)
        l_dp, out["acc_D_prime"] = self.disc_loss("D_prime", feat_real, feat_fake)
        self._update("D_prime", l_dp)
        out["L_D_prime"] = l_dp.item()
        return out

    def _measure_grads(self, step: int, weighted: Mapping[str, torch.Tensor], *nets: str) -> None:
        """Every ``grad_norm_every`` steps, the L2 norm of each weighted loss term's gradient on
        the parameters of each of ``nets`` (``gn_<term>_<net>``; 0 where a term does not reach a
        net), so the logs show which term drives a shared net (methods.md: no weighted term should
        dominate another 100-fold). The graph is kept for the update that follows."""
        every = self.config.grad_norm_every
        if not every or (step + 1) % every:
            return
        for net in nets:
            params = [p for p in self.nets[net].parameters() if p.requires_grad]
            for term, loss in weighted.items():
                if not loss.requires_grad:
                    self._grad_norms[f"gn_{term}_{net}"] = 0.0
                    continue
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                sq = sum(float(g.pow(2).sum()) for g in grads if g is not None)
                self._grad_norms[f"gn_{term}_{net}"] = math.sqrt(sq)

    def probe(self, lr_genuine: torch.Tensor | None, lr_artificial: torch.Tensor | None) -> dict[str, float]:
        """phi_cr's residual on fixed genuine and artificial faces (``(N,3,16,16)`` in [0,1]):
        RMS in [-1,1] units and the share of its energy that is one pattern for every face
        (:mod:`lrfacebench.metrics.residual`). Empty for W/O CR."""
        if not self.config.use_cr:
            return {}
        out: dict[str, float] = {}
        with torch.no_grad(), self._eval_mode("phi_cr") as phi_cr:
            for name, x in (("genuine", lr_genuine), ("artificial", lr_artificial)):
                if x is not None and len(x) >= 2:
                    xp = unit_to_signed(x.to(self.device))
                    out.update(residual_stats(xp, phi_cr(xp)).as_dict(f"probe_{name}_"))
        return out

    def identity_critic(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What stage 2's identity critic sees of 64x64 faces ``(N,3,64,64)`` in [0,1]: D''s
        probability that their phi_fr features are of real HR faces (Eq. 8's real stream), and
        each face's cosine to its nearest CentreFace class centre (how closely phi_fr places it
        on one of its training identities); both ``(N,)``. Meaningful once phi_fr and D' trained."""
        with torch.no_grad(), self._eval_mode("phi_fr") as phi_fr, self._eval_mode("D_prime") as d_prime:
            x = unit_to_signed(faces.to(self.device))
            p_real = torch.sigmoid(d_prime(self._fr_features(x)).reshape(-1))
            feat = F.normalize(phi_fr.embed(x), dim=1)
            centres = F.normalize(self.nets["centre_loss"].centres, dim=1)
            return p_real, (feat @ centres.T).max(dim=1).values

    # ----- inference ---------------------------------------------------------------------------
    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        """Genuine LR: ``phi_sr(phi_cr(x))``; artificial LR (``DS(hr)``, e.g. Helen): ``phi_sr(x)``.
        ``(N,3,16,16)`` in [0,1] -> ``(N,3,64,64)`` in [0,1], clamped."""
        x = unit_to_signed(lr.to(self.device))
        if self.config.use_cr and not artificial:
            x = self.nets["phi_cr"](x)
        return signed_to_unit(self.nets["phi_sr"](x)).clamp(0, 1)

    def regulate(self, lr: torch.Tensor) -> torch.Tensor | None:
        """Regulated LR ``phi_cr(x)`` (Table 5): ``(N,3,16,16)`` in [0,1] -> same, clamped to [0,1];
        ``None`` for W/O CR."""
        if not self.config.use_cr:
            return None
        return signed_to_unit(self.nets["phi_cr"](unit_to_signed(lr.to(self.device)))).clamp(0, 1)
