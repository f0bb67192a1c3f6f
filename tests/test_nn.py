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
from lrfacebench.nn.sngan import SNResNetDiscriminator


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
