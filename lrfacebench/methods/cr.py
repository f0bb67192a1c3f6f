"""Characteristic Regularisation (CR; Cheng, Zhu, Gong, WACV 2020), as specified in methods.md §1.

Genuine LR x_g --phi_cr--> regulated LR r (artificial-LR characteristics) --phi_sr--> 64x64 SR.

Networks (``self.nets``; images in [-1,1] inside this module, [0,1] at the Method interface):

- ``phi_cr``, ``phi_cr_tilde`` (:class:`PhiCR`, 16->16): genuine->artificial and its inverse.
- ``D``, ``D_tilde`` (SNGAN ResNet, 16x16 -> logit): artificial vs regulated / genuine vs pseudo-genuine.
- ``phi_sr`` (:class:`PhiSR`, 16->64): the "adapted SRGAN" with 12/3/2 residual blocks.
- ``D_prime`` (5 FC layers on 512-d phi_fr features): Eq. 8.
- ``phi_fr`` (CentreFace) and ``centre_loss`` (its class centres): pre-trained, then frozen.
- ``D_sr`` (SRGAN discriminator): stage-1 adversarial loss of phi_sr.

Stages (stage 1's three parts are independent of each other, so running them one after the
other is the same as the paper's "in parallel"):

- ``stage1_sr``: phi_sr by Eq. 1 (MSE) + 1e-3 adversarial with D_sr, on (y, x_a = DS(y)).
- ``stage1_fr``: phi_fr by softmax + 0.003 centre loss on HR identities (SGD).
- ``stage1_cc``: per iteration a D~ step, a phi~_cr step (Eq. 5), a D step (Eq. 3), a phi_cr
  step (Eq. 6), on unpaired x_a and x_g.
- ``stage2``: phi_cr and phi_sr jointly by Eq. 9 (one Adam), then a D step and a D' step;
  D~, phi~_cr, D_sr and phi_fr are frozen (requires_grad off, eval mode).

Fill-ins and deviations from the paper (each also commented where it happens):

- every ``||.||^2`` is a mean (methods.md §1.5.1); GANs are vanilla log loss in the
  non-saturating form (``gan_form="saturating"`` for the literal minimax form, applied to every
  generator-side log loss of CR);
- phi_cr / phi~_cr: conv3x3+ReLU head, 3 residual blocks, conv3x3 tail, global input skip; the
  tail conv is zero-initialised so both start exactly at the identity (our fill-in, §1.5.4);
- phi_sr: SRGAN's trunk (12 blocks + conv3x3-BN, skip from the head) then x2, 3 blocks with a
  skip, x2, 2 blocks with a skip, conv9x9 + tanh (1,623,575 parameters: methods.md's 1.62M);
- D, D~: SNGAN-style (128 ch, spectral norm, 2 down-sampling blocks, sum pool); D': 512-512-256-
  128-64-1 with LeakyReLU 0.2; Adam beta=(0.9, 0.999) for all Adam optimisers (TF default);
- phi_fr: our small residual CentreFace (``nn.centreface``), SGD momentum 0.9 / wd 5e-4, no
  learning-rate decay, lr 0.00625 (Wen et al.'s 0.1 at batch 256 scaled to batch 16; the spec's
  0.1 diverges on our network); its schedule length is not in the paper (see :data:`PAPER_ITERATIONS`);
- Eq. 6's input phi~_cr(x_a) is computed with phi~_cr in eval mode and without gradient, so no
  Eq. 6 gradient reaches phi~_cr ("learned independently", §1.5.5);
- Eq. 7's f_DS is the project's one DS (``degrade.downsample``), the function that makes every
  x_a (methods.md §1.5.2), so there is no kernel option;
- Eq. 7's target phi_cr(x_g) is stop-gradient; whether Eq. 7/8 gradients reach phi_cr through
  phi_sr's input is ``cr_grad_into_phi_cr`` (default ``input_path``, §1.3);
- the stage-2 D step uses the regulated batch computed before that iteration's generator update;
- stage 2 keeps phi_sr's batch-norm layers in eval mode (``sr_bn_stage2="frozen"``): it fine-tunes
  phi_sr with the statistics stage 1 estimated on artificial LR. With batch statistics, Eq. 1's
  batch (x_a) and Eq. 7/8's batch (phi_cr(x_g)) are normalised apart, the running statistics fit
  neither, and at inference phi_sr drew coloured marks into the top-right corner of dark faces
  (README, "Stage 2 and batch norm");
- D and D~ judge real and fake halves in one forward (one spectral-norm power iteration per step);
- the batch norm of phi_cr and phi~_cr runs on fixed statistics (``cr_bn="fixed"``, both
  presets): each BN layer is a learned per-channel affine, the same in training and at inference.
  With batch statistics every CC step normalised two populations apart (x_g for Eq. 3,
  phi~_cr(x_a) for Eq. 6's reconstruction), the running averages fitted neither, and phi_cr's
  output at inference differed from its training output by 15-20 % of its whole edit.

Small-data options (not in the paper; off in the ``paper`` preset, on in ``cpu``): D and D~ see
images minus their per-channel means (``d_input="zero_mean"``), through DiffAugment
(``d_augment``), and L_cr gains an L1 between 4x4 mean pools of phi_cr(x_g) and x_g
(``cr_lowpass_l1``). With a few hundred genuine faces from a handful of photos, D tells the two
LR sets apart by each photo's colour cast, and phi_cr then repaints faces instead of changing
their degradation; the README ("CR on small data") gives the measurements.

Loss-balance options (paper weights by default; the ``cpu`` preset changes them, measured):
``lambda_rec`` weighs Eq. 6's reconstruction, ``lambda_identity`` adds ``mse(phi_cr(x_a), x_a)``
(CycleGAN's identity loss) to L_cr, ``tilde_lowpass_l1`` anchors phi~_cr at low pass only, and
``d_input="highpass"`` shows D and D~ only what a Gaussian blur removes. ``grad_norm_every``
logs each weighted term's gradient norm on the net it trains (``gn_<term>_<net>``); with mean
reductions the paper's Eq. 6 gives the GAN term 20-60x the reconstruction's gradient on phi_cr.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lrfacebench.degrade import downsample
from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage
from lrfacebench.nn.augment import check_policy, diff_augment
from lrfacebench.nn.blocks import BasicResidualBlock, MLPDiscriminator
from lrfacebench.nn.centreface import CentreFace, CentreLoss
from lrfacebench.nn.losses import bce_fake, bce_real
from lrfacebench.nn.sngan import SNResNetDiscriminator, real_fake_logits
from lrfacebench.nn.srgan import ResidualBlock, SRGANDiscriminator, UpsampleBlock, conv

log = logging.getLogger(__name__)

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

# Nets each stage trains; every other net is frozen (requires_grad off) and kept in eval mode.
TRAINED_NETS: dict[str, tuple[str, ...]] = {
    "stage1_sr": ("phi_sr", "D_sr"),
    "stage1_fr": ("phi_fr", "centre_loss"),
    "stage1_cc": ("phi_cr", "phi_cr_tilde", "D", "D_tilde"),
    "stage2": ("phi_cr", "phi_sr", "D", "D_prime"),
}
# The spectral-norm discriminators: they see inputs through the small-data options and judge
# real and fake in one forward (nn.sngan.real_fake_logits).
SN_DISCRIMINATORS = ("D", "D_tilde")
STAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "stage1_sr": ("hr", "lr_artificial"),
    "stage1_fr": ("hr", "identity"),
    "stage1_cc": ("lr_artificial", "lr_genuine"),
    "stage2": ("hr", "lr_artificial", "lr_genuine"),
}


# ----- networks ---------------------------------------------------------------------------------
class PhiCR(nn.Module):
    """Characteristic regulariser (phi_cr) or its inverse (phi~_cr): ``(N,3,16,16)`` -> same shape,
    [-1,1] in, unbounded out (no output activation, methods.md §1.1).

    conv3x3 3->64 + ReLU; 3 :class:`BasicResidualBlock`; conv3x3 64->3; plus the input (global
    skip). 225,859 parameters. The tail conv starts at zero, so the network starts as identity.
    """

    def __init__(self, ch: int = 64, n_blocks: int = 3) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[BasicResidualBlock(ch) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(ch, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.blocks(self.head(x)))


class PhiSR(nn.Module):
    """CR's SR module (phi_sr, "adapted SRGAN"): ``(N,3,16,16)`` in [-1,1] -> ``(N,3,64,64)`` in [-1,1].

    conv9x9 3->64 + PReLU; group 1 = 12 SRGAN residual blocks + conv3x3 + BN with a skip from the
    head (SRGAN's trunk); then for groups 2 and 3 (3 and 2 blocks): x2 sub-pixel up-sampling, the
    blocks, a skip around them; conv9x9 64->3 + tanh. 1,623,575 parameters.

    The paper says only "3 groups containing 12/3/2 residual blocks, resolution x2 across each
    group". The skips around groups 2 and 3 and the tanh are our fill-ins (methods.md §1.1); the
    conv-BN closing group 1 is SRGAN's, and it is what makes methods.md's 1.62M.
    """

    def __init__(self, ch: int = 64, groups: Sequence[int] = (12, 3, 2)) -> None:
        super().__init__()
        self.head = nn.Sequential(conv(3, ch, 9), nn.PReLU())
        self.trunk = nn.Sequential(*[ResidualBlock(ch) for _ in range(groups[0])],
                                   conv(ch, ch), nn.BatchNorm2d(ch))
        self.ups = nn.ModuleList(UpsampleBlock(ch) for _ in groups[1:])
        self.groups = nn.ModuleList(nn.Sequential(*[ResidualBlock(ch) for _ in range(n)])
                                    for n in groups[1:])
        self.tail = nn.Sequential(conv(ch, 3, 9), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.trunk(h)
        for up, group in zip(self.ups, self.groups):
            h = up(h)
            h = h + group(h)
        return self.tail(h)


# ----- config -----------------------------------------------------------------------------------
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
    lambda_gan: float = 0.2  # lambda of Eq. 6
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
    # small-data options, not in the paper (all off in the paper preset; README, "CR on small data"):
    d_input: str = "raw"  # "zero_mean": D and D~ see each image minus its per-channel mean;
    # "highpass": minus its Gaussian blur (sigma 1 px), so they judge blur, noise and compression
    # and not colour or layout (the frequency separation of Fritsche et al., ICCVW 2019)
    d_augment: tuple[str, ...] = ()  # DiffAugment policy for D and D~ inputs (nn.augment)
    cr_lowpass_l1: float = 0.0  # weight of L1(pool4(phi_cr(x_g)), pool4(x_g)) added to L_cr
    # resolutions of the paper's ambiguities (methods.md §1.5)
    gan_form: str = "non_saturating"  # or "saturating"
    cr_grad_into_phi_cr: str = "input_path"  # or "none"
    sr_bn_stage2: str = "frozen"  # or "batch": phi_sr's batch norm in stage 2 (fill-in, see above)
    cr_bn: str = "fixed"  # or "batch": batch norm of phi_cr and phi~_cr (fix, see the module docstring)
    grad_norm_every: int = 0  # every N steps log each loss term's gradient norm on the nets it shares
    d_prime_input: str = "raw"  # or "l2norm": D' sees L2-normalised phi_fr features
    # ablations (see CR.variants)
    use_cr: bool = True  # False: W/O CR (Table 4)
    joint_finetune: bool = True  # False: W/O SR-RI (Table 6), no stage 2

    def validate(self) -> None:
        choices = {"gan_form": ("non_saturating", "saturating"),
                   "cr_grad_into_phi_cr": ("input_path", "none"),
                   "d_prime_input": ("raw", "l2norm"), "d_input": ("raw", "zero_mean", "highpass"),
                   "sr_bn_stage2": ("frozen", "batch"), "cr_bn": ("fixed", "batch")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"cr: {key}={getattr(self, key)!r}; choose one of {allowed}")
        for key in ("sr_iterations", "fr_iterations", "cc_iterations", "joint_iterations",
                    "cc_tilde_warmup", "grad_norm_every"):
            if getattr(self, key) < 0:
                raise ValueError(f"cr: {key} must be >= 0, got {getattr(self, key)}")
        if self.batch_size < 1 or self.fr_batch_size < 1:
            raise ValueError("cr: batch sizes must be >= 1")
        try:
            check_policy(self.d_augment)
        except ValueError as e:
            raise ValueError(f"cr: d_augment: {e}") from None
        if self.centre_weight <= 0:
            raise ValueError("cr: centre_weight must be > 0 (centre gradients are divided by it)")


# ----- helpers ----------------------------------------------------------------------------------
def _pm(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> [-1,1]."""
    return x * 2.0 - 1.0


def _unit(x: torch.Tensor) -> torch.Tensor:
    """[-1,1] -> [0,1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


@contextlib.contextmanager
def _no_param_grad(*modules: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into ``modules``' parameters (gradients still flow through them)."""
    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur (5 taps, reflected borders) of ``(N,C,H,W)``, per channel."""
    t = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def _floats(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: v.item() for k, v in terms.items()}


def _disc_accuracy(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fraction of a discriminator's decisions that are right (real logit > 0, fake logit < 0)."""
    return float(torch.cat([(real > 0), (fake < 0)]).float().mean())


# ----- the method -------------------------------------------------------------------------------
class CR(Method):
    name = "cr"
    summary = "Characteristic Regularisation (Cheng, Zhu, Gong, WACV 2020): phi_sr(phi_cr(x))"
    Config = CRConfig
    presets = {
        "paper": {},
        # a real run on the embedded sample in about half an hour on 2 free CPU cores, batch 16 as
        # the paper, fewer iterations. Options that differ from the paper preset, each measured on
        # the sample (README, "CR on small data"):
        # - stage1_sr is SRGAN's MSE pre-training (sr_adv_weight 0: no D_sr, 35 instead of 19
        #   img/s) at Adam lr 5e-4 (sr_lr): held-out Y-PSNR after 600 iterations 25.5 dB (bicubic
        #   24.9); at the paper's 1e-4 it was 24.6 dB without and 23.6 dB after 1500 iterations
        #   with the 1e-3 adversarial term (measured before the sample's HR faces were re-framed);
        # - the identity L1 of phi~_cr (methods.md §1.5.4) at weight 10: with the GAN-only Eq. 5
        #   phi~_cr forgets its input within ~50 iterations, and at weight 1 it still drifted
        #   0.09-0.20 from it, so Eq. 6 taught phi_cr a strong sharpening;
        # - the small-data options: D and D~ see mean-free, DiffAugmented inputs and L_cr keeps
        #   phi_cr(x_g)'s 4x4 mean pools near x_g's (weight 10). Without them phi_cr repainted the
        #   colours of every face (4x4 low-pass PSNR to x_g 17.6 dB on the re-framed sample,
        #   14.5-23.2 dB before; with them 41-43 dB);
        # - D' sees L2-normalised phi_fr features (methods.md §1.5.10): phi_fr, fitted to 24
        #   identities in 400 iterations, is a weak judge, and with raw features Eq. 8's gradient
        #   through it painted dark eye bands and horizontal stripes onto phi_sr's faces;
        # - Eq. 8 at a tenth of the paper's weight (lambda_cr_gan 0.003): on the larger development
        #   set (scripts/make_sample.py --all-licences: 996 HR, 573 genuine training faces) its
        #   gradient through that phi_fr drew dark "sunglasses" over the eyes of CR's test faces
        #   at 0.03, in neither of two runs at 0.003; on the sample, CR's KID to HR faces fell
        #   from 0.499 to 0.452 (bicubic 0.438). (The coloured corner marks of those runs came
        #   from phi_sr's batch statistics in stage 2: see sr_bn_stage2.)
        # - Eq. 6's reconstruction at 100x the paper's weight and the identity loss on x_a at 300
        #   (lambda_rec, lambda_identity): at the paper's weights the reconstruction's gradient on
        #   phi_cr was 20-60x smaller than the GAN term's (gn_* in metrics.csv), and phi_cr painted
        #   one pattern on every face (fixed share 0.41, RMS 0.10 on artificial faces after 300
        #   CC iterations); with them, after 600: fixed share 0.16-0.20, RMS 0.025 on artificial
        #   faces, and regulated LR is closer to artificial LR than the input (Table 5 FID
        #   -15.9 [-21.8, -9.9]); docs/experiments/2026-12-01-cr-regulariser.md.
        "cpu": {"sr_iterations": 2000, "sr_lr": 5e-4, "sr_adv_weight": 0.0, "fr_iterations": 400,
                "cc_iterations": 600, "joint_iterations": 600, "tilde_identity_l1": 10.0,
                "d_input": "zero_mean", "d_augment": ("translation", "cutout"), "cr_lowpass_l1": 10.0,
                "d_prime_input": "l2norm", "lambda_cr_gan": 0.003, "lambda_rec": 100.0,
                "lambda_identity": 300.0, "grad_norm_every": 50},
        # a whole `lrfb train cr` in a few seconds: every step of every stage runs twice
        "smoke": {"sr_iterations": 2, "fr_iterations": 2, "cc_iterations": 2,
                  "joint_iterations": 2, "batch_size": 4, "fr_batch_size": 4},
    }
    variants = {
        "default": {},
        "wo_cr": {"use_cr": False},  # Table 4: L_base = L_sr + 0.01 L_cr-sr + 0.03 L_cr-gan, r := x_g
        "wo_srri": {"joint_finetune": False},  # Table 6: stage-1 phi_sr(stage-1 phi_cr(x_g))
        "wo_ul": {"lambda_cr_sr": 0.0},  # Table 7: no unsupervised Eq. 7 loss in stage 2
    }
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
            nets["phi_cr_tilde"] = PhiCR()
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

    def _g_adv(self, logits: torch.Tensor) -> torch.Tensor:
        """Generator side of a log-loss GAN: non-saturating ``-log D(G)`` or saturating ``log(1-D(G))``."""
        if self.config.gan_form == "saturating":
            return -bce_fake(logits)
        return bce_real(logits)

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

    # ----- loss terms (tensors; the steps below combine them and update) -------------------------
    # Images are in [-1,1]. Each function builds its graph so that only the nets the spec says
    # (methods.md §1.3) can receive gradients from it; tests/test_cr.py checks every one.
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
        return bce_real(real_logits) + bce_fake(fake_logits), _disc_accuracy(real_logits, fake_logits)

    def sr_generator_losses(self, y: torch.Tensor, x_a: torch.Tensor
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stage-1 SR: ``L_sr = mse(phi_sr(x_a), y)`` (Eq. 1) and ``L_sr_adv = bce(D_sr(phi_sr(x_a)),1)``.
        Returns (phi_sr(x_a), terms). D_sr's parameters get no gradient."""
        sr = self.nets["phi_sr"](x_a)
        with _no_param_grad(self.nets["D_sr"]):
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
        with _no_param_grad(self.nets["D_tilde"]):
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
        pools: the coarse colour and layout of x_g) at that weight. Only phi_cr gets gradients."""
        c = self.config
        rec = F.mse_loss(self.nets["phi_cr"](self._pseudo_genuine(x_a)), x_a)
        with _no_param_grad(self.nets["D"]):
            gan = self._g_adv(self._judge("D", r))
        terms = {"L_cr": c.lambda_rec * rec + c.lambda_gan * gan, "L_cr_rec": rec, "L_gan": gan}
        if c.lambda_identity > 0:
            terms["L_cr_identity"] = F.mse_loss(self.nets["phi_cr"](x_a), x_a)
            terms["L_cr"] = terms["L_cr"] + c.lambda_identity * terms["L_cr_identity"]
        if c.cr_lowpass_l1 > 0:
            terms["L_cr_lowpass"] = F.l1_loss(F.avg_pool2d(r, 4), F.avg_pool2d(x_g, 4))
            terms["L_cr"] = terms["L_cr"] + c.cr_lowpass_l1 * terms["L_cr_lowpass"]
        return terms

    def _fr_features(self, img: torch.Tensor) -> torch.Tensor:
        """phi_fr features of 64x64 images in [-1,1] as D' sees them (raw or L2-normalised)."""
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
        with _no_param_grad(self.nets["D_prime"]):
            feat_fake = self._fr_features(sr_r)
            terms["L_cr_gan"] = self._g_adv(self.nets["D_prime"](feat_fake))
        total = terms["L_sr"] + c.lambda_cr_sr * terms["L_cr_sr"] + c.lambda_cr_gan * terms["L_cr_gan"]
        if c.use_cr:
            total = total + c.lambda_cr * terms["L_cr"]
        terms["L_G"] = total
        return r, feat_fake, terms

    # ----- steps ---------------------------------------------------------------------------------
    def _step_sr(self, batch: Batch, step: int) -> dict[str, float]:
        """Eq. 1 + 1e-3 adversarial (phi_sr step), then the D_sr step (SRGAN's order).
        With ``sr_adv_weight = 0``: Eq. 1 alone (SRGAN's MSE pre-training), no D_sr step."""
        y, x_a = _pm(batch.hr), _pm(batch.lr_artificial)
        if self.config.sr_adv_weight == 0:
            l_sr = F.mse_loss(self.nets["phi_sr"](x_a), y)
            self._update("phi_sr", l_sr)
            return {"L_sr": l_sr.item()}
        sr, terms = self.sr_generator_losses(y, x_a)
        self._update("phi_sr", terms["L_sr"] + self.config.sr_adv_weight * terms["L_sr_adv"])
        l_d, acc = self.disc_loss("D_sr", y, sr)
        self._update("D_sr", l_d)
        return {**_floats(terms), "L_D_sr": l_d.item(), "acc_D_sr": acc}

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
        logits, terms = self.fr_losses(_pm(batch.hr), ids)
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
        x_a, x_g = _pm(batch.lr_artificial), _pm(batch.lr_genuine)
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
                   "L_cr_identity": c.lambda_identity}
        self._measure_grads(step, {k: w * cr[k] for k, w in weights.items() if k in cr}, "phi_cr")
        self._update("phi_cr", cr["L_cr"])
        return {**out, "L_D": l_d.item(), "acc_D": acc, **_floats(cr), **self._grad_norms}

    def _step_joint(self, batch: Batch, step: int) -> dict[str, float]:
        """Eq. 9 step over phi_sr and phi_cr (one Adam), then a D step (Eq. 3) and a D' step (Eq. 8).

        The D step sees the regulated batch from before this iteration's generator update.
        """
        c = self.config
        y, x_a, x_g = _pm(batch.hr), _pm(batch.lr_artificial), _pm(batch.lr_genuine)
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
            feat_real = self._fr_features(y)
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
        from lrfacebench.metrics.residual import residual_stats

        if not self.config.use_cr:
            return {}
        out: dict[str, float] = {}
        with torch.no_grad(), self._eval_mode("phi_cr") as phi_cr:
            for name, x in (("genuine", lr_genuine), ("artificial", lr_artificial)):
                if x is not None and len(x) >= 2:
                    xp = _pm(x.to(self.device))
                    out.update(residual_stats(xp, phi_cr(xp)).as_dict(f"probe_{name}_"))
        return out

    # ----- inference ---------------------------------------------------------------------------
    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        """Genuine LR: ``phi_sr(phi_cr(x))``; artificial LR (``DS(hr)``, e.g. Helen): ``phi_sr(x)``.
        ``(N,3,16,16)`` in [0,1] -> ``(N,3,64,64)`` in [0,1], clamped."""
        x = _pm(lr.to(self.device))
        if self.config.use_cr and not artificial:
            x = self.nets["phi_cr"](x)
        return _unit(self.nets["phi_sr"](x))

    def regulate(self, lr: torch.Tensor) -> torch.Tensor | None:
        """Regulated LR ``phi_cr(x)`` (Table 5): ``(N,3,16,16)`` in [0,1] -> same, clamped to [0,1];
        ``None`` for W/O CR."""
        if not self.config.use_cr:
            return None
        return _unit(self.nets["phi_cr"](_pm(lr.to(self.device))))
