"""Shared network modules: adversarial losses, SNGAN discriminator, blocks, CentreFace."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrfacebench.degrade import imresize
from lrfacebench.io import read_rgb
from lrfacebench.nn.blocks import BasicResidualBlock, MLPDiscriminator
from lrfacebench.nn.centreface import CentreFace, CentreLoss
from lrfacebench.nn.losses import bce_fake, bce_real, hinge_d, hinge_g, lsgan
from lrfacebench.nn.sngan import SNResNetDiscriminator, real_fake_logits


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def faces(sample_dir) -> tuple[torch.Tensor, list[str]]:
    """8 real HR sample faces of 2 identities, (8,3,64,64) in [-1,1], and their labels."""
    rows = [r for r in csv.DictReader(open(sample_dir / "provenance.csv")) if r["kind"] == "hr"]
    names = sorted({r["identity"] for r in rows if r["identity"]})
    chosen = [r for r in rows if r["identity"] in names[:2]][:4] + \
             [r for r in rows if r["identity"] in names[2:3]][:4]
    imgs = np.stack([read_rgb(sample_dir / r["path"]) for r in chosen])
    x = imresize(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0, (64, 64))
    return x.clamp(0, 1) * 2 - 1, [r["identity"] for r in chosen]


# ----- losses ------------------------------------------------------------------------------------
def test_log_losses_match_their_formulas():
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0])
    p = torch.sigmoid(logits)
    assert torch.allclose(bce_real(logits), -torch.log(p).mean(), atol=1e-6)
    assert torch.allclose(bce_fake(logits), -torch.log(1 - p).mean(), atol=1e-6)
    # the saturating generator loss -bce_fake is mean log(1 - D(G)), bounded above by 0
    assert torch.allclose(-bce_fake(logits), torch.log(1 - p).mean(), atol=1e-6)


def test_hinge_and_lsgan():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    assert hinge_d(real, fake).item() == pytest.approx((0 + 0.5 + 2) / 3 + (0 + 1 + 2.5) / 3)
    assert hinge_g(fake).item() == pytest.approx(-fake.mean().item())
    pred = torch.tensor([[0.2, 0.9], [1.1, -0.3]])
    assert lsgan(pred, True).item() == pytest.approx(((pred - 1) ** 2).mean().item())
    assert lsgan(pred, False).item() == pytest.approx((pred ** 2).mean().item())


# ----- SNGAN discriminator --------------------------------------------------------------------------
def test_cr_discriminator_shape_params_and_spectral_norm():
    torch.manual_seed(0)
    d = SNResNetDiscriminator([128] * 6, [True, True, False, False, False, False])
    assert _n_params(d) == 1_644_161  # methods.md: D, D~ ~1.6M each
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for _ in range(30):  # power iterations converge in training mode
        out = d(x)
    assert out.shape == (4,)
    d.eval()
    conv = d.blocks[3].conv1
    sigma = torch.linalg.matrix_norm(conv.weight.reshape(conv.weight.shape[0], -1), ord=2)
    assert sigma.item() == pytest.approx(1.0, rel=0.05)
    sigma_raw = torch.linalg.matrix_norm(conv.parametrizations.weight.original.reshape(128, -1), ord=2)
    assert sigma_raw.item() > 1.2  # so the normalisation really acts


def test_sngan_state_round_trips_with_weights_only():
    torch.manual_seed(0)
    d = SNResNetDiscriminator([64, 128, 128], [True, True, False], pool="avg")
    x = torch.rand(2, 3, 16, 16)
    d(x)  # one power iteration updates the _u buffers
    sd = d.state_dict()
    assert any(k.endswith("_u") for k in sd), "spectral-norm state must be saved"
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    d2 = SNResNetDiscriminator([64, 128, 128], [True, True, False], pool="avg")
    d2.load_state_dict(torch.load(buf, weights_only=True))
    d.eval(), d2.eval()
    assert torch.equal(d(x), d2(x))


def test_real_fake_logits_is_one_forward_with_one_power_iteration(faces):
    x = F.avg_pool2d(faces[0], 4)  # (8,3,16,16) real faces
    d = SNResNetDiscriminator([32, 32], [True, False])
    d.eval()  # fixed spectral-norm vectors: the same logits as two separate calls
    real, fake = real_fake_logits(d, x[:5], x[5:])
    assert real.shape == (5,) and fake.shape == (3,)
    assert torch.allclose(real, d(x[:5]), atol=1e-6) and torch.allclose(fake, d(x[5:]), atol=1e-6)
    d.train()
    calls = []
    d.register_forward_hook(lambda *_: calls.append(1))
    sn = next(m.parametrizations.weight[0] for m in d.modules() if isinstance(m, torch.nn.Conv2d))
    u = sn._u.clone()
    real_fake_logits(d, x[:5], x[5:])
    assert len(calls) == 1 and not torch.equal(u, sn._u)  # one training forward, one iteration


def test_sngan_lrgan_layout_and_errors():
    d = SNResNetDiscriminator([128] * 5, [True] * 4 + [False], pool="avg")  # LRGAN's 64x64 D
    assert d(torch.zeros(2, 3, 64, 64)).shape == (2,)
    with pytest.raises(ValueError, match="equal length"):
        SNResNetDiscriminator([128, 128], [True])
    with pytest.raises(ValueError, match="pool"):
        SNResNetDiscriminator([128], [True], pool="max")  # type: ignore[arg-type]


# ----- blocks ---------------------------------------------------------------------------------------
def test_basic_residual_block_and_mlp_discriminator():
    blk = BasicResidualBlock(64)
    assert _n_params(blk) == 74_112
    x = torch.randn(2, 64, 8, 8)
    assert blk(x).shape == x.shape
    torch.nn.init.zeros_(blk.body[4].weight)  # last BN scale 0: the block is the identity
    assert torch.equal(blk(x), x)
    dp = MLPDiscriminator()
    assert _n_params(dp) == 435_201  # methods.md: D' 0.44M
    assert sum(isinstance(m, torch.nn.Linear) for m in dp.modules()) == 5
    assert dp(torch.randn(3, 512)).shape == (3,)
    with pytest.raises(ValueError):
        MLPDiscriminator((512, 64))


# ----- CentreFace ------------------------------------------------------------------------------------
def test_centre_loss_matches_the_distance_matrix_formula():
    torch.manual_seed(0)
    loss = CentreLoss(5, 8)
    feat, labels = torch.randn(6, 8), torch.tensor([0, 1, 1, 4, 2, 0])
    c = loss.centres
    distmat = (feat ** 2).sum(1, keepdim=True) + (c ** 2).sum(1)[None] - 2 * feat @ c.t()
    expected = (distmat * F.one_hot(labels, 5)).sum() / 6  # KaiyangZhou's center_loss.py
    assert loss(feat, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_centreface_shapes_and_training_on_real_faces(faces):
    torch.manual_seed(0)
    x, labels = faces
    names = sorted(set(labels))
    y = torch.tensor([names.index(n) for n in labels])
    net, centres = CentreFace(len(names)), CentreLoss(len(names))
    feat = net.embed(x)
    assert feat.shape == (8, 512) and net(x).shape == (8, 512)
    assert net.classify(feat).shape == (8, len(names))
    opt = torch.optim.SGD(net.parameters(), lr=0.00625, momentum=0.9, weight_decay=5e-4)
    first = None
    for _ in range(5):
        f = net.embed(x)
        loss = F.cross_entropy(net.classify(f), y) + 0.003 * centres(f, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert torch.isfinite(loss) and loss.item() < first
    with pytest.raises(RuntimeError, match="n_identities=0"):
        CentreFace(0).classify(feat)


# ----- DiffAugment ---------------------------------------------------------------------------------
def test_diff_augment_transforms_on_real_faces(faces):
    from lrfacebench.nn.augment import diff_augment
    x = F.avg_pool2d(faces[0], 4)  # (8,3,16,16) real faces in [-1,1]
    torch.manual_seed(0)
    moved = diff_augment(x, ["translation"])
    for a, b in zip(moved, x):  # each face is a shift of itself by at most 2 px, zero filled
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(a, torch.roll(b, (-dy, -dx), (1, 2)) *
                                  _inside(16, dy, dx).to(b.dtype))]
        assert matches
    assert any(not torch.equal(a, b) for a, b in zip(moved, x))
    cut = diff_augment(x, ["cutout"])
    zeroed = (cut == 0).all(dim=1)  # one 8x8 square per face, the rest unchanged
    assert torch.equal(zeroed.sum((1, 2)), torch.full((8,), 64))
    assert torch.equal(cut[~zeroed.unsqueeze(1).expand_as(cut)], x[~zeroed.unsqueeze(1).expand_as(x)])
    torch.manual_seed(1)
    a = diff_augment(x, ["brightness", "saturation", "contrast", "translation", "cutout"])
    torch.manual_seed(1)
    assert torch.equal(a, diff_augment(x, ["brightness", "saturation", "contrast", "translation", "cutout"]))
    x_grad = x.clone().requires_grad_(True)  # differentiable: D's gradient reaches the generator
    diff_augment(x_grad, ["brightness", "contrast", "translation", "cutout"]).sum().backward()
    assert x_grad.grad is not None and x_grad.grad.abs().sum() > 0
    assert diff_augment(x, []) is x
    with pytest.raises(ValueError, match="unknown transform 'color'"):
        diff_augment(x, ["color"])


def _inside(size: int, dy: int, dx: int) -> torch.Tensor:
    """Mask of the pixels that a shift by (dy, dx) fills from inside a size x size image."""
    idx = torch.arange(size)
    rows = ((idx + dy) >= 0) & ((idx + dy) < size)
    cols = ((idx + dx) >= 0) & ((idx + dx) < size)
    return (rows[:, None] & cols[None, :])
