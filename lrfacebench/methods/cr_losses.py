"""CR's loss terms, Eq. 1-9 of the paper (methods.md §1.2), each a method that builds its own graph
so that only the nets of methods.md §1.3 receive its gradient (``tests/test_cr.py`` checks every
term's routing). :class:`CRLosses` is a mixin of :class:`lrfacebench.methods.cr.CR`: it reads
``self.nets``, ``self.config`` (a :class:`~lrfacebench.methods.cr_config.CRConfig`) and
``self._eval_mode``. Images are ``(N,3,H,W)`` in [-1,1]; every loss is a batch mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lrfacebench.degrade import downsample
from lrfacebench.nn.augment import diff_augment
from lrfacebench.nn.losses import bce_fake, bce_real, common_highband_energy, disc_accuracy, no_param_grad
from lrfacebench.nn.sngan import real_fake_logits

# The spectral-norm discriminators: they see inputs through the small-data options and judge
# real and fake in one forward (nn.sngan.real_fake_logits).
SN_DISCRIMINATORS = ("D", "D_tilde")


def _blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur (5 taps, reflected borders) of ``(N,C,H,W)``, per channel."""
    t = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


class CRLosses:
    """The loss terms of :class:`~lrfacebench.methods.cr.CR` (tensors; CR's steps combine them and
    update)."""

    def _g_adv(self, logits: torch.Tensor) -> torch.Tensor:
        """Generator side of a log-loss GAN: non-saturating ``-log D(G)`` or saturating ``log(1-D(G))``."""
        if self.config.gan_form == "saturating":
            return -bce_fake(logits)
        return bce_real(logits)

    def _judge(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Logits of discriminator ``name`` for ``x``. D and D~ see ``x`` through the small-data
        options (``d_input``, ``d_augment``), applied alike to real, fake and generator-side inputs."""
        if name in SN_DISCRIMINATORS:
            if self.config.d_input == "zero_mean":
                x = x - x.mean(dim=(2, 3), keepdim=True)
            elif self.config.d_input == "highpass":
                x = x - _blur(x)
            x = diff_augment(x, self.config.d_augment)
        return self.nets[name](x)

    def disc_loss(self, name: str, real: torch.Tensor, fake: torch.Tensor
                  ) -> tuple[torch.Tensor, float]:
        """Discriminator step loss of net ``name``: ``bce(D(real),1) + bce(D(sg fake),0)``.
        Returns (loss, accuracy of D's decisions on this batch). The spectral-norm D and D~ see
        both halves in one forward; D_sr (batch norm) and D' see them one after the other."""
        if name in SN_DISCRIMINATORS:
            real_logits, fake_logits = real_fake_logits(lambda x: self._judge(name, x), real, fake.detach())
        else:
            real_logits, fake_logits = self._judge(name, real), self._judge(name, fake.detach())
        return bce_real(real_logits) + bce_fake(fake_logits), disc_accuracy(real_logits, fake_logits)

    def sr_generator_losses(self, y: torch.Tensor, x_a: torch.Tensor
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stage-1 SR: ``L_sr = mse(phi_sr(x_a), y)`` (Eq. 1) and ``L_sr_adv = bce(D_sr(phi_sr(x_a)),1)``.
        Returns (phi_sr(x_a), terms). D_sr's parameters get no gradient."""
        sr = self.nets["phi_sr"](x_a)
        with no_param_grad(self.nets["D_sr"]):
            adv = self._g_adv(self.nets["D_sr"](sr))
        return sr, {"L_sr": F.mse_loss(sr, y), "L_sr_adv": adv}

    def fr_losses(self, y: torch.Tensor, ids: torch.Tensor
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CentreFace: softmax cross-entropy and centre loss of labelled faces ``ids >= 0``.
        Returns (logits, terms)."""
        phi_fr = self.nets["phi_fr"]
        feat = phi_fr.embed(y)
        logits = phi_fr.classify(feat)
        return logits, {"L_fr_softmax": F.cross_entropy(logits, ids),
                        "L_fr_centre": self.nets["centre_loss"](feat, ids)}

    def tilde_generator_losses(self, x_a: torch.Tensor, pseudo: torch.Tensor
                               ) -> dict[str, torch.Tensor]:
        """phi~_cr side of Eq. 5: ``bce(D~(phi~_cr(x_a)),1)``, plus the optional identity L1
        (weight ``tilde_identity_l1``) and low-pass L1 between 4x4 mean pools (weight
        ``tilde_lowpass_l1``), both 0 by default. ``pseudo = phi~_cr(x_a)``."""
        with no_param_grad(self.nets["D_tilde"]):
            gan = self._g_adv(self._judge("D_tilde", pseudo))
        return {"L_gan_tilde": gan, "L_tilde_id": F.l1_loss(pseudo, x_a),
                "L_tilde_lowpass": F.l1_loss(F.avg_pool2d(pseudo, 4), F.avg_pool2d(x_a, 4))}

    def _pseudo_genuine(self, x_a: torch.Tensor) -> torch.Tensor:
        """sg phi~_cr(x_a), with phi~_cr in eval mode: no Eq. 6 gradient reaches phi~_cr."""
        with torch.no_grad(), self._eval_mode("phi_cr_tilde") as phi_t:
            return phi_t(x_a)

    def cr_losses(self, x_a: torch.Tensor, x_g: torch.Tensor, r: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
        """Eq. 6 with ``r = phi_cr(x_g)``: ``L_cr_rec = mse(phi_cr(sg phi~_cr(x_a)), x_a)``,
        ``L_gan = bce(D(r),1)`` (Eq. 3, generator side), ``L_cr = lambda_rec L_cr_rec + lambda L_gan``
        (``lambda_rec`` 1 in the paper);
        with ``cr_lowpass_l1 > 0`` also ``L_cr_lowpass = l1(pool4(r), pool4(x_g))`` (4x4 average
        pools: the coarse colour and layout of x_g) at that weight; with ``cr_common_hp > 0`` also
        ``L_cr_common`` = :func:`common_highband_energy` of ``r - x_g``. Only phi_cr gets gradients."""
        c = self.config
        rec = F.mse_loss(self.nets["phi_cr"](self._pseudo_genuine(x_a)), x_a)
        with no_param_grad(self.nets["D"]):
            gan = self._g_adv(self._judge("D", r))
        terms = {"L_cr": c.lambda_rec * rec + c.lambda_gan * gan, "L_cr_rec": rec, "L_gan": gan}
        if c.lambda_identity > 0:
            terms["L_cr_identity"] = F.mse_loss(self.nets["phi_cr"](x_a), x_a)
            terms["L_cr"] = terms["L_cr"] + c.lambda_identity * terms["L_cr_identity"]
        if c.cr_lowpass_l1 > 0:
            terms["L_cr_lowpass"] = F.l1_loss(F.avg_pool2d(r, 4), F.avg_pool2d(x_g, 4))
            terms["L_cr"] = terms["L_cr"] + c.cr_lowpass_l1 * terms["L_cr_lowpass"]
        if c.cr_common_hp > 0:
            terms["L_cr_common"] = common_highband_energy(r - x_g)
            terms["L_cr"] = terms["L_cr"] + c.cr_common_hp * terms["L_cr_common"]
        return terms

    def _fr_features(self, img: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """phi_fr features of 64x64 images ``(N,3,64,64)`` in [-1,1] as D' sees them (raw or
        L2-normalised), ``(N,512)``; with ``augment`` the images first pass through the
        ``d_prime_augment`` policy (stage 2 augments D''s real, fake and generator-side inputs alike)."""
        if augment:
            img = diff_augment(img, self.config.d_prime_augment)
        feat = self.nets["phi_fr"].embed(img)
        return F.normalize(feat, dim=1) if self.config.d_prime_input == "l2norm" else feat

    def joint_losses(self, y: torch.Tensor, x_a: torch.Tensor, x_g: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Stage-2 terms. Returns (r, phi_fr features of phi_sr(r), terms) with
        ``r = phi_cr(x_g)`` (``x_g`` itself for W/O CR) and terms

        - ``L_sr = mse(phi_sr(x_a), y)`` (Eq. 1, MSE only);
        - ``L_cr``, ``L_cr_rec``, ``L_gan`` (Eq. 6; not for W/O CR);
        - ``L_cr_sr = mse(DS(phi_sr(r)), sg r)`` (Eq. 7);
        - ``L_cr_gan = bce(D'(phi_fr(phi_sr(r))),1)`` (Eq. 8, generator side; through the frozen phi_fr);
        - ``L_G`` = Eq. 9 (W/O CR: ``L_base = L_sr + l_cr_sr L_cr_sr + l_cr_gan L_cr_gan``).
        """
        c = self.config
        phi_sr = self.nets["phi_sr"]
        terms = {"L_sr": F.mse_loss(phi_sr(x_a), y)}
        if c.use_cr:
            r = self.nets["phi_cr"](x_g)
            terms.update(self.cr_losses(x_a, x_g, r))
        else:
            r = x_g
        # Eq. 7 / Eq. 8 reach phi_cr only through phi_sr's input, and only with input_path
        sr_r = phi_sr(r if c.cr_grad_into_phi_cr == "input_path" else r.detach())
        terms["L_cr_sr"] = F.mse_loss(downsample(sr_r), r.detach())
        with no_param_grad(self.nets["D_prime"]):
            feat_fake = self._fr_features(sr_r, augment=True)
            terms["L_cr_gan"] = self._g_adv(self.nets["D_prime"](feat_fake))
        total = terms["L_sr"] + c.lambda_cr_sr * terms["L_cr_sr"] + c.lambda_cr_gan * terms["L_cr_gan"]
        if c.use_cr:
            total = total + c.lambda_cr * terms["L_cr"]
        terms["L_G"] = total
        return r, feat_fake, terms
