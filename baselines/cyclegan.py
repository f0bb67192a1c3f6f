"""CycleGAN (Zhu et al., ICCV 2017) as a genuine-LR face SR baseline.

Reference code read (not copied): junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py
ResnetGenerator / NLayerDiscriminator / init_weights, models/cycle_gan_model.py,
util/image_pool.py, options/*). Repo defaults kept: ResNet-9 generators (ngf 64, InstanceNorm,
reflection padding), 70x70 PatchGAN (n_layers 3), LSGAN, L1 cycle loss lambda 10 for both
directions, identity loss 0.5*lambda, image pools of 50 feeding the discriminators only,
Adam 2e-4 (beta1 0.5) for both G together and both D together, batch 1, constant lr then linear
decay to 0, N(0, 0.02) initialisation.

Our setup (methods.md section 3): domain A = genuine LR up-sampled x4 with the project's bicubic
(:func:`lrfacebench.degrade.upsample`), domain B = HR 64x64; SR = G_A(up(x)). Variant ``native``:
G_A 16->64, G_B 64->16, D_B (which judges domain A) with n_layers 2, no identity loss.
Images are [-1,1] inside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lrfacebench.degrade import upsample
from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage
from lrfacebench.nn.losses import lsgan
from lrfacebench.pixels import signed_to_unit, unit_to_signed


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """pad-conv3x3-IN-ReLU-pad-conv3x3-IN plus identity skip (reflection padding)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """``(N,3,S,S)`` in [-1,1] -> ``(N,3,S*2^n_up/2^n_down, ...)`` in [-1,1] (tanh).

    conv7x7 -> ``n_down`` stride-2 convs (width x2 each) -> ``n_blocks`` :class:`ResnetBlock`
    at ``4*ngf`` channels -> ``n_up`` stride-2 transposed convs (width /2 each) -> conv7x7 -> tanh.
    The repo's ResNet-9 is ``n_down = n_up = 2`` (11,378,179 parameters at ngf 64); the native
    variant's G_A is ``n_down=0, n_up=2`` (16->64) and G_B ``n_down=2, n_up=0`` (64->16).
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9, n_down: int = 2, n_up: int = 2) -> None:
        super().__init__()
        if not (0 <= n_down <= 2 and 0 <= n_up <= 2):
            raise ValueError(f"n_down and n_up must be in 0..2, got {n_down}, {n_up}")
        ch = ngf * 2 ** (2 - n_down)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ch, 7), _norm(ch), nn.ReLU(True)]
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), _norm(2 * ch), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``(N,3,S,S)`` in [-1,1] -> ``(N,1,h,w)`` patch scores (LSGAN targets 1/0).

    ``n_layers=3`` is the 70x70 PatchGAN (64x64 input -> 6x6 map); ``n_layers=2`` for 16x16 inputs.
    """

    def __init__(self, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride=stride, padding=1), _norm(out), nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_normal(net: nn.Module, std: float = 0.02) -> nn.Module:
    """The repo's ``init_type='normal'``: conv weights N(0, std), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


class ImagePool:
    """History of generated images (Shrivastava et al.) feeding a discriminator.

    While fewer than ``size`` images are stored, each query image is stored and returned; after
    that, with probability 1/2 a query image is swapped for a random stored one (which is
    returned), otherwise it is returned as is. Images are stored detached. Randomness comes from
    the pool's own generator, whose state is part of :meth:`state`, so a resumed run draws the
    same decisions.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.images: torch.Tensor | None = None  # (count, 3, H, W)
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` -> ``(N,3,H,W)`` detached, a mix of ``images`` and stored history."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for img in images:
            count = 0 if self.images is None else len(self.images)
            if count < self.size:
                self.images = img[None].clone() if self.images is None else torch.cat([self.images, img[None]])
                out.append(img)
            elif torch.rand((), generator=self.rng).item() > 0.5:
                i = int(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.stack(out)

    def state(self) -> dict[str, torch.Tensor]:
        images = torch.zeros(0) if self.images is None else self.images.detach().cpu().clone()
        return {"images": images, "rng": self.rng.get_state()}

    def load_state(self, state: Mapping[str, torch.Tensor], device: torch.device) -> None:
        images = state["images"]
        self.images = images.to(device).clone() if images.numel() else None
        self.rng.set_state(state["rng"])


@dataclass
class CycleGANConfig(MethodConfig):
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    d_layers: int = 3
    native: bool = False
    lambda_cycle: float = 10.0  # lambda_A = lambda_B
    lambda_identity: float = 0.5  # times lambda_cycle
    pool_size: int = 50
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 1
    # The repo trains 100 epochs at constant lr + 100 of linear decay; the CR paper gives no
    # CycleGAN schedule, so we fix an iteration budget (see baselines/README.md).
    iterations: int = 200_000
    decay_start: int = 100_000


class CycleGAN(Method):
    name = "cyclegan"
    summary = "CycleGAN: ResNet-9 G, PatchGAN D, LSGAN, cycle 10, identity 5, pool 50; SR = G_A(bicubic(x))"
    Config = CycleGANConfig
    presets = {
        "paper": {},
        # narrower nets (ngf/ndf 32: 2.9M parameters per G) for ~10 minutes on 2 cores
        "cpu": {"ngf": 32, "ndf": 32, "batch_size": 4, "iterations": 800, "decay_start": 400},
        # smoke: tiny nets and a 5x larger lr, so that 25 steps visibly lower the cycle loss
        "smoke": {"ngf": 8, "ndf": 8, "n_blocks": 2, "batch_size": 4, "iterations": 25,
                  "decay_start": 20, "pool_size": 6, "lr": 1e-3},
    }
    variants = {"default": {}, "native": {"native": True, "lambda_identity": 0.0}}
    deployed = ("g_a",)

    def __init__(self, config: CycleGANConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        if c.native and c.lambda_identity:
            raise ValueError("cyclegan native: the identity loss needs equal domain sizes; set lambda_identity=0")
        if c.native:
            g_a, g_b = ResnetGenerator(c.ngf, c.n_blocks, 0, 2), ResnetGenerator(c.ngf, c.n_blocks, 2, 0)
            d_b = PatchDiscriminator(c.ndf, 2)
        else:
            g_a, g_b = ResnetGenerator(c.ngf, c.n_blocks), ResnetGenerator(c.ngf, c.n_blocks)
            d_b = PatchDiscriminator(c.ndf, c.d_layers)
        # D_A judges domain B (G_A's outputs), D_B judges domain A (G_B's outputs), as in the repo
        nets = {"g_a": g_a, "g_b": g_b, "d_a": PatchDiscriminator(c.ndf, c.d_layers), "d_b": d_b}
        self.nets = {k: init_normal(v).to(self.device) for k, v in nets.items()}
        params = lambda *ks: [p for k in ks for p in self.nets[k].parameters()]  # noqa: E731
        self.optimizers = {
            "g": torch.optim.Adam(params("g_a", "g_b"), lr=c.lr, betas=(c.beta1, 0.999)),
            "d": torch.optim.Adam(params("d_a", "d_b"), lr=c.lr, betas=(c.beta1, 0.999))}
        seed = int(torch.randint(2**62, ()))  # from the seeded global RNG
        self.pools = {"a": ImagePool(c.pool_size, seed), "b": ImagePool(c.pool_size, seed + 1)}

    def stages(self) -> list[Stage]:
        return [Stage("train", self.config.iterations, ("hr", "lr_genuine"), self.config.batch_size)]

    def lr_at(self, step: int) -> float:
        """Constant until ``decay_start``, then linear towards 0 at ``iterations``."""
        c = self.config
        return c.lr * max(0.0, 1.0 - max(0, step - c.decay_start) / float(c.iterations - c.decay_start + 1))

    def domain_a(self, lr: torch.Tensor) -> torch.Tensor:
        """Genuine LR ``(N,3,16,16)`` [0,1] -> domain A in [-1,1]: bicubic x4 (64x64), or native 16x16."""
        x = lr if self.config.native else upsample(lr, 4).clamp(0, 1)
        return unit_to_signed(x)

    # ----- losses -----------------------------------------------------------------------------
    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every G term (weighted as in ``total``) plus the fakes ``fake_a``/``fake_b`` for the D step."""
        c, n = self.config, self.nets
        fake_b = n["g_a"](real_a)
        fake_a = n["g_b"](real_b)
        out = {"fake_a": fake_a, "fake_b": fake_b,
               "gan_a": lsgan(n["d_a"](fake_b), True), "gan_b": lsgan(n["d_b"](fake_a), True),
               "cycle_a": F.l1_loss(n["g_b"](fake_b), real_a) * c.lambda_cycle,
               "cycle_b": F.l1_loss(n["g_a"](fake_a), real_b) * c.lambda_cycle}
        if c.lambda_identity > 0:
            w = c.lambda_cycle * c.lambda_identity
            out["idt_a"] = F.l1_loss(n["g_a"](real_b), real_b) * w
            out["idt_b"] = F.l1_loss(n["g_b"](real_a), real_a) * w
        out["total"] = sum(v for k, v in out.items() if not k.startswith("fake"))
        return out

    def discriminator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor,
                             fake_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """LSGAN D losses, halved as in the repo; fakes come through the image pools (detached)."""
        n = self.nets
        pooled_b = self.pools["b"].query(fake_b)
        pooled_a = self.pools["a"].query(fake_a)
        d_a = 0.5 * (lsgan(n["d_a"](real_b), True) + lsgan(n["d_a"](pooled_b), False))
        d_b = 0.5 * (lsgan(n["d_b"](real_a), True) + lsgan(n["d_b"](pooled_a), False))
        return {"d_a": d_a, "d_b": d_b}

    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        self.train()
        lr = self.lr_at(step)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        real_a, real_b = self.domain_a(batch.lr_genuine), unit_to_signed(batch.hr)
        discriminators = (self.nets["d_a"], self.nets["d_b"])
        for d in discriminators:
            d.requires_grad_(False)
        self.zero_grad()
        g = self.generator_losses(real_a, real_b)
        g["total"].backward()
        self.optimizers["g"].step()
        for d in discriminators:
            d.requires_grad_(True)
        self.zero_grad()
        d = self.discriminator_losses(real_a, real_b, g["fake_a"], g["fake_b"])
        (d["d_a"] + d["d_b"]).backward()
        self.optimizers["d"].step()
        out = {("g_total" if k == "total" else k): v.item() for k, v in g.items() if not k.startswith("fake")}
        return {**out, **{k: v.item() for k, v in d.items()}, "lr": lr}

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        sr = self.nets["g_a"](self.domain_a(lr.to(self.device)))
        return signed_to_unit(sr).clamp(0, 1)

    def extra_state(self) -> dict[str, Any]:
        return {f"pool_{k}": p.state() for k, p in self.pools.items()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        for k, p in self.pools.items():
            if f"pool_{k}" in state:
                p.load_state(state[f"pool_{k}"], self.device)
