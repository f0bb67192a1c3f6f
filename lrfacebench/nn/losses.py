"""Adversarial losses shared by CR and the baselines. Every loss is a batch mean (a 0-d tensor).

Inputs are discriminator outputs of any shape (usually ``(N,)`` logits, or ``(N,1,h,w)`` patch
maps for LSGAN); the mean runs over all elements.

- log loss (CR, SRGAN): :func:`bce_real`, :func:`bce_fake` -- BCE with logits against 1 / 0.
  The non-saturating generator loss is ``bce_real(D(G(z)))``; the saturating one is
  ``-bce_fake(D(G(z)))`` (= mean log(1 - sigmoid(D(G(z))))).
- hinge (LRGAN, SNGAN): :func:`hinge_d`, :func:`hinge_g`.
- least squares (CycleGAN): :func:`lsgan`.

Helpers of adversarial training: :func:`disc_accuracy` (how often a discriminator is right on a
batch) and :func:`no_param_grad` (a loss's gradient flows *through* a net into another, not into
the net's own parameters).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def bce_real(logits: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits against target 1: ``mean softplus(-logits)`` (= -log sigmoid)."""
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def bce_fake(logits: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits against target 0: ``mean softplus(logits)`` (= -log(1 - sigmoid))."""
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: ``mean relu(1 - D(real)) + mean relu(1 + D(fake))``."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: ``-mean D(fake)``."""
    return -fake.mean()


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: ``mean (pred - t)^2`` with ``t = 1`` if ``real`` else ``0``."""
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    return F.mse_loss(pred, target)


def disc_accuracy(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fraction of a discriminator's decisions that are right (real logit > 0, fake logit < 0)."""
    return float(torch.cat([(real > 0), (fake < 0)]).float().mean())


@contextlib.contextmanager
def no_param_grad(*modules: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into ``modules``' parameters (gradients still flow through them)."""
    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def common_highband_energy(residual: torch.Tensor, pool: int = 4) -> torch.Tensor:
    """Energy of what a batch of residuals shares above a ``pool`` x ``pool`` low pass.

    ``residual``: ``(N,C,H,W)``, H and W multiples of ``pool``. ``m`` = the mean over the batch
    ``(1,C,H,W)``; returns ``mean((m - up(avgpool(m)))^2)``, a scalar: 0 when the residuals
    share no pattern finer than the pool (a common colour or brightness shift is free).
    """
    m = residual.mean(dim=0, keepdim=True)
    low = F.interpolate(F.avg_pool2d(m, pool), scale_factor=pool, mode="nearest")
    return (m - low).pow(2).mean()
