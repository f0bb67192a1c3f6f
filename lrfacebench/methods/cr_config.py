"""CR's configuration: the paper's schedule in iterations, :class:`CRConfig` (the paper's values by
default, every departure an option) and the presets. Why each ``cpu`` value differs from the
paper, and what was measured, is in docs/cr.md and docs/experiments/.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lrfacebench.methods.base import MethodConfig
from lrfacebench.nn.augment import check_policy

# Dataset sizes used to turn the paper's epochs into iterations (methods.md §1.4).
CELEBA_FACES = 202_599  # HR auxiliary set: one stage-1 SR / stage-2 epoch is one pass over it
WIDER_FACES = 153_440  # genuine LR training faces: one CC epoch is one pass over them
PAPER_BATCH = 16


def _epochs_to_iterations(epochs: int, n_faces: int, batch: int = PAPER_BATCH) -> int:
    return epochs * math.ceil(n_faces / batch)


PAPER_ITERATIONS = {
    "stage1_sr": _epochs_to_iterations(100, CELEBA_FACES),  # 100 epochs x 12,663 = 1,266,300
    # Fill-in: the paper gives no CentreFace schedule. We use as many samples as Wen et al.'s
    # 28k iterations at batch 256, i.e. 448,000 iterations at batch 16.
    "stage1_fr": 28_000 * 256 // PAPER_BATCH,
    "stage1_cc": _epochs_to_iterations(130, WIDER_FACES),  # 130 epochs x 9,590 = 1,246,700
    "stage2": _epochs_to_iterations(10, CELEBA_FACES),  # 10 epochs x 12,663 = 126,630
}


@dataclass
class CRConfig(MethodConfig):
    """CR's options; defaults are the paper's (methods.md §1), fill-ins marked in comments."""

    # schedule, in iterations (the paper's epochs converted with PAPER_ITERATIONS)
    sr_iterations: int = PAPER_ITERATIONS["stage1_sr"]
    fr_iterations: int = PAPER_ITERATIONS["stage1_fr"]
    cc_iterations: int = PAPER_ITERATIONS["stage1_cc"]
    joint_iterations: int = PAPER_ITERATIONS["stage2"]
    batch_size: int = 16  # per stream
    fr_batch_size: int = 16  # CentreFace batch (the paper names 16 for everything)
    cc_tilde_warmup: int = 0  # option: first N stage1_cc iterations train only D~ and phi~_cr
    # optimisers
    lr: float = 1e-4
    sr_lr: float = 1e-4  # Adam lr of phi_sr and D_sr in stage1_sr (the paper: 1e-4, as everywhere)
    # option: "cosine" anneals sr_lr to 0 over stage1_sr (Loshchilov & Hutter's SGDR without
    # restarts, BasicSR's usual SR schedule), so phi_sr ends at a settled point and not at one
    # noisy Adam step of a constant, high lr (the paper: "constant")
    sr_lr_schedule: str = "constant"
    betas: tuple[float, float] = (0.9, 0.999)  # fill-in: TF's Adam default
    # CentreFace SGD, fill-in after Wen et al. (lr 0.1 at batch 256, momentum 0.9, wd 5e-4).
    # Deviation from methods.md's "SGD 0.1": on our phi_fr lr 0.1 diverges (NaN within 10
    # iterations on the sample at batch 16 and at batch 64), so we scale Wen's lr linearly to
    # our batch: 0.1 * 16 / 256 = 0.00625 (stable; see tests/test_cr.py).
    fr_lr: float = 0.1 * 16 / 256
    fr_momentum: float = 0.9
    fr_weight_decay: float = 5e-4
    centre_weight: float = 0.003
    centre_lr: float = 0.5
    # loss weights
    # lambda of Eq. 6. On LR faces with known truth, Eq. 6's GAN term at 0.2 makes phi_cr add
    # detail that is not the face's; at 0.02 phi_cr restores them (docs/cr.md, "CR on small data")
    lambda_gan: float = 0.2
    # option: weight of Eq. 6's reconstruction term (the paper: 1). With mean reductions its
    # gradient on phi_cr is ~60x smaller than the GAN term's (measured: gn_* in metrics.csv)
    lambda_rec: float = 1.0
    # option: weight of mse(phi_cr(x_a), x_a), the identity-mapping loss of CycleGAN (Zhu et al.
    # 2017, §5.2): a face that is already artificial LR is left as it is
    lambda_identity: float = 0.0
    lambda_cr: float = 0.06  # Eq. 9
    lambda_cr_sr: float = 0.01  # Eq. 9 (0 for the W/O UL ablation)
    lambda_cr_gan: float = 0.03  # Eq. 9
    sr_adv_weight: float = 1e-3  # stage-1 SR adversarial weight (SRGAN's); 0: MSE only, no D_sr step
    tilde_identity_l1: float = 0.0  # option (methods.md §1.5.4): L1(phi~_cr(x_a), x_a) weight
    # option: L1(pool4(phi~_cr(x_a)), pool4(x_a)) weight: keeps phi~_cr's colours and layout and
    # leaves it free to add blur, noise and compression at finer scales (the identity L1 above
    # holds every scale, so phi~_cr stays the identity and Eq. 6 asks phi_cr to be one too)
    tilde_lowpass_l1: float = 0.0
    # option: channels of fresh N(0,1) noise phi~_cr sees beside x_a (nn.cr.PhiCR), so that its
    # pseudo-genuine faces can carry random degradations (noise) and not only deterministic ones
    tilde_noise: int = 0
    # small-data options, not in the paper (all off in the paper preset; docs/cr.md, "CR on small data"):
    d_input: str = "raw"  # "zero_mean": D and D~ see each image minus its per-channel mean;
    # "highpass": minus its Gaussian blur (sigma 1 px), so they judge blur, noise and compression
    # and not colour or layout (the frequency separation of Fritsche et al., ICCVW 2019)
    d_augment: tuple[str, ...] = ()  # DiffAugment policy for D and D~ inputs (nn.augment)
    cr_lowpass_l1: float = 0.0  # weight of L1(pool4(phi_cr(x_g)), pool4(x_g)) added to L_cr
    # weight of the energy of the batch-mean residual mean_b(phi_cr(x_g) - x_g) above the 4x4
    # low pass, added to L_cr: a restoration depends on the face, one texture painted on every
    # face does not (issue 14's "fixed pattern"); the low band (colour, brightness) stays free
    cr_common_hp: float = 0.0
    # resolutions of the paper's ambiguities (methods.md §1.5)
    gan_form: str = "non_saturating"  # or "saturating"
    cr_grad_into_phi_cr: str = "input_path"  # or "none"
    sr_bn_stage2: str = "frozen"  # or "batch": phi_sr's batch norm in stage 2 (fill-in, docs/cr.md)
    cr_bn: str = "fixed"  # or "batch": batch norm of phi_cr and phi~_cr (a fix, docs/cr.md)
    grad_norm_every: int = 0  # every N steps log each loss term's gradient norm on the nets it shares
    d_prime_input: str = "raw"  # or "l2norm": D' sees L2-normalised phi_fr features
    # option: DiffAugment policy (nn.augment) for the 64x64 faces whose phi_fr features D' judges
    # (real HR and phi_sr(r) alike): on the sample D' tells phi_fr's training faces from unseen HR
    # faces (diagnose's identity critic), i.e. it memorises them (issue 14)
    d_prime_augment: tuple[str, ...] = ()
    # ablations (see CR.variants)
    use_cr: bool = True  # False: W/O CR (Table 4)
    joint_finetune: bool = True  # False: W/O SR-RI (Table 6), no stage 2

    def validate(self) -> None:
        choices = {"gan_form": ("non_saturating", "saturating"),
                   "cr_grad_into_phi_cr": ("input_path", "none"),
                   "d_prime_input": ("raw", "l2norm"), "d_input": ("raw", "zero_mean", "highpass"),
                   "sr_bn_stage2": ("frozen", "batch"), "cr_bn": ("fixed", "batch"),
                   "sr_lr_schedule": ("constant", "cosine")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"cr: {key}={getattr(self, key)!r}; choose one of {allowed}")
        for key in ("sr_iterations", "fr_iterations", "cc_iterations", "joint_iterations",
                    "cc_tilde_warmup", "grad_norm_every", "tilde_noise"):
            if getattr(self, key) < 0:
                raise ValueError(f"cr: {key} must be >= 0, got {getattr(self, key)}")
        if self.batch_size < 1 or self.fr_batch_size < 1:
            raise ValueError("cr: batch sizes must be >= 1")
        for key in ("d_augment", "d_prime_augment"):
            try:
                check_policy(getattr(self, key))
            except ValueError as e:
                raise ValueError(f"cr: {key}: {e}") from None
        if self.centre_weight <= 0:
            raise ValueError("cr: centre_weight must be > 0 (centre gradients are divided by it)")


CR_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # a real run on the embedded sample in about half an hour on 2 CPU cores, batch 16 as the
    # paper, fewer iterations; each option is measured on the sample (docs/cr.md, "CR on small data")
    "cpu": {"sr_iterations": 2000, "sr_lr": 5e-4, "sr_lr_schedule": "cosine", "sr_adv_weight": 0.0, "fr_iterations": 400,
            "cc_iterations": 600, "joint_iterations": 600, "tilde_noise": 2, "tilde_lowpass_l1": 10.0,
            "d_input": "zero_mean", "d_augment": ("translation", "cutout"), "cr_lowpass_l1": 10.0,
            "d_prime_input": "l2norm", "lambda_cr_gan": 0.003, "lambda_rec": 100.0,
            "lambda_identity": 300.0, "lambda_gan": 0.02, "cr_common_hp": 1000.0, "grad_norm_every": 50},
    # a whole `lrfb train cr` in a few seconds: every step of every stage runs twice
    "smoke": {"sr_iterations": 2, "fr_iterations": 2, "cc_iterations": 2,
              "joint_iterations": 2, "batch_size": 4, "fr_batch_size": 4},
}
CR_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "wo_cr": {"use_cr": False},  # Table 4: L_base = L_sr + 0.01 L_cr-sr + 0.03 L_cr-gan, r := x_g
    "wo_srri": {"joint_finetune": False},  # Table 6: stage-1 phi_sr(stage-1 phi_cr(x_g))
    "wo_ul": {"lambda_cr_sr": 0.0},  # Table 7: no unsupervised Eq. 7 loss in stage 2
}
