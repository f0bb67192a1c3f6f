"""CR (methods.md §1): parameter counts, gradient routing of every loss term and step, frozen
modules, inference paths, and short training runs on real sample faces."""
from __future__ import annotations

import csv
import hashlib
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrfacebench.degrade import downsample, imresize
from lrfacebench.io import read_rgb
from lrfacebench.methods import get_method
from lrfacebench.methods.base import Batch
from lrfacebench.methods.cr import CR, TRAINED_NETS
from lrfacebench.methods.cr_config import PAPER_ITERATIONS
from lrfacebench.nn.losses import bce_fake, common_highband_energy

B = 4  # faces per stream: keeps every test fast on 2 CPU cores


def _load(sample_dir, rows: list[dict], size: int) -> torch.Tensor:
    imgs = [torch.from_numpy(read_rgb(sample_dir / r["path"])).permute(2, 0, 1)[None].float() / 255.0
            for r in rows]
    return torch.cat([imresize(x, (size, size)) for x in imgs]).clamp(0, 1)


@pytest.fixture(scope="module")
def real(sample_dir) -> tuple[Batch, int]:
    """A Batch of real sample faces: B labelled HR faces (64x64) of 2 identities, x_a = DS(hr),
    B genuine-LR crops (16x16); and the number of identities."""
    rows = list(csv.DictReader(open(sample_dir / "provenance.csv", newline="")))
    labelled = [r for r in rows if r["kind"] == "hr" and r["identity"]]
    names = sorted({r["identity"] for r in labelled})[:2]
    hr_rows = [r for r in labelled if r["identity"] == names[0]][: B // 2] + \
              [r for r in labelled if r["identity"] == names[1]][: B // 2]
    lr_rows = [r for r in rows if r["kind"] == "genuine_lr"][::37][:B]
    hr = _load(sample_dir, hr_rows, 64)
    ids = torch.tensor([names.index(r["identity"]) for r in hr_rows])
    return Batch(hr=hr, identity=ids, lr_artificial=downsample(hr),
                 lr_genuine=_load(sample_dir, lr_rows, 16)), len(names)


def make(n_identities: int = 2, variant: str = "default", **overrides) -> CR:
    torch.manual_seed(0)
    return CR(CR.make_config("smoke", variant, {"n_identities": n_identities, **overrides}))


def grads_reach(method: CR, loss: torch.Tensor) -> set[str]:
    """Names of the nets whose parameters get a non-zero gradient from ``loss``."""
    for net in method.nets.values():
        for p in net.parameters():
            p.grad = None
    loss.backward(retain_graph=True)
    return {name for name, net in method.nets.items()
            if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())}


def state_hash(net: torch.nn.Module) -> str:
    """sha256 of a net's parameters and buffers (BN statistics, spectral-norm vectors)."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pm(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1


# ----- structure ---------------------------------------------------------------------------------
def test_parameter_counts_match_methods_md():
    counts = make().parameter_counts()
    m = 1e6
    assert abs(counts["phi_cr"] / m - 0.23) < 0.005  # methods.md §1.1: 0.23M each
    assert counts["phi_cr_tilde"] == counts["phi_cr"]
    assert abs(counts["phi_sr"] / m - 1.62) < 0.005  # 1.62M
    assert abs(counts["deployed"] / m - 1.85) < 0.005  # phi_cr + phi_sr: 1.85M
    assert counts["deployed"] == counts["phi_cr"] + counts["phi_sr"]
    assert abs(counts["D"] / m - 1.6) < 0.05 and counts["D_tilde"] == counts["D"]  # ~1.6M each
    assert abs(counts["D_prime"] / m - 0.44) < 0.005  # 0.44M
    wo_cr = make(variant="wo_cr")
    assert "phi_cr" not in wo_cr.nets and wo_cr.deployed == ("phi_sr",)
    assert wo_cr.parameter_counts()["deployed"] == counts["phi_sr"]


def test_registry_stages_presets_and_variants():
    assert get_method("cr") is CR
    paper = CR(CR.make_config("paper", "default", {"n_identities": 2}))
    stages = paper.stages()
    assert [s.name for s in stages] == ["stage1_sr", "stage1_fr", "stage1_cc", "stage2"]
    # the paper's epochs in iterations at batch 16: 100 x 12,663; 130 x 9,590; 10 x 12,663
    assert [s.iterations for s in stages] == [1_266_300, 448_000, 1_246_700, 126_630]
    assert [s.iterations for s in stages] == [PAPER_ITERATIONS[s.name] for s in stages]
    assert all(s.batch_size == 16 for s in stages)
    assert stages[0].needs == ("hr", "lr_artificial") and stages[1].needs == ("hr", "identity")
    assert set(stages[2].needs) == {"lr_artificial", "lr_genuine"}
    assert set(stages[3].needs) == {"hr", "lr_artificial", "lr_genuine"}
    c = paper.config
    assert (c.lambda_gan, c.lambda_cr, c.lambda_cr_sr, c.lambda_cr_gan) == (0.2, 0.06, 0.01, 0.03)
    assert (c.lr, tuple(c.betas)) == (1e-4, (0.9, 0.999))
    assert [s.name for s in make(variant="wo_srri").stages()] == ["stage1_sr", "stage1_fr", "stage1_cc"]
    assert [s.name for s in make(variant="wo_cr").stages()] == ["stage1_sr", "stage1_fr", "stage2"]
    assert make(variant="wo_ul").config.lambda_cr_sr == 0.0
    assert sum(s.iterations for s in make().stages()) <= 8  # smoke
    with pytest.raises(ValueError, match="gan_form"):
        make(gan_form="wasserstein")
    with pytest.raises(ValueError, match="cr_grad_into_phi_cr"):
        make(cr_grad_into_phi_cr="output")


# ----- gradient routing of every loss term (methods.md §1.3) ----------------------------------------
def test_gradient_routing_stage1_terms(real):
    batch, n_ids = real
    cr = make(n_ids)
    y, x_a, x_g = pm(batch.hr), pm(batch.lr_artificial), pm(batch.lr_genuine)

    cr.enter_stage("stage1_sr")
    sr, t = cr.sr_generator_losses(y, x_a)
    assert grads_reach(cr, t["L_sr"]) == {"phi_sr"}
    assert grads_reach(cr, t["L_sr_adv"]) == {"phi_sr"}  # not D_sr
    assert grads_reach(cr, cr.disc_loss("D_sr", y, sr)[0]) == {"D_sr"}  # not phi_sr

    cr.enter_stage("stage1_fr")
    _, t = cr.fr_losses(y, batch.identity)
    assert grads_reach(cr, t["L_fr_softmax"]) == {"phi_fr"}
    assert grads_reach(cr, t["L_fr_centre"]) == {"phi_fr", "centre_loss"}

    cr.enter_stage("stage1_cc")
    cr.nets["phi_cr_tilde"].tail.weight.data.normal_(0, 0.1)  # away from the identity it starts at
    pseudo = cr.nets["phi_cr_tilde"](x_a)
    assert grads_reach(cr, cr.disc_loss("D_tilde", x_g, pseudo)[0]) == {"D_tilde"}
    # Eq. 5 (and the optional identity L1) is phi~_cr's only loss; it never reaches D~ or phi_cr
    t = cr.tilde_generator_losses(x_a, pseudo)
    assert grads_reach(cr, t["L_gan_tilde"]) == {"phi_cr_tilde"}
    assert grads_reach(cr, t["L_tilde_id"]) == {"phi_cr_tilde"}
    assert grads_reach(cr, t["L_tilde_lowpass"]) == {"phi_cr_tilde"}
    r = cr.nets["phi_cr"](x_g)
    assert grads_reach(cr, cr.disc_loss("D", x_a, r)[0]) == {"D"}
    t = cr.cr_losses(x_a, x_g, r)
    assert t["L_cr_rec"].item() > 0 and "L_cr_identity" not in t  # the identity term is an option
    for term in ("L_cr", "L_cr_rec", "L_gan"):  # Eq. 6: phi_cr only -- never phi~_cr, never D
        assert grads_reach(cr, t[term]) == {"phi_cr"}, term
    cr = make(n_ids, lambda_identity=3.0, d_input="highpass")
    cr.enter_stage("stage1_cc")
    cr.nets["phi_cr"].tail.weight.data.normal_(0, 0.1)
    r = cr.nets["phi_cr"](x_g)
    t = cr.cr_losses(x_a, x_g, r)
    assert t["L_cr_identity"].item() > 0 and grads_reach(cr, t["L_cr_identity"]) == {"phi_cr"}
    assert t["L_cr"].item() == pytest.approx((t["L_cr_rec"] + 0.2 * t["L_gan"] + 3.0 * t["L_cr_identity"]).item())
    assert grads_reach(cr, cr.disc_loss("D", x_a, r)[0]) == {"D"}  # through the high-pass input too


def test_gradient_routing_stage2_terms(real):
    batch, n_ids = real
    cr = make(n_ids)
    y, x_a, x_g = pm(batch.hr), pm(batch.lr_artificial), pm(batch.lr_genuine)
    cr.enter_stage("stage2")
    r, feat_fake, t = cr.joint_losses(y, x_a, x_g)
    assert grads_reach(cr, t["L_sr"]) == {"phi_sr"}
    assert grads_reach(cr, t["L_cr"]) == {"phi_cr"}
    # Eq. 7 and Eq. 8 reach phi_cr through phi_sr's input (input_path); never phi_fr, D', D
    assert grads_reach(cr, t["L_cr_sr"]) == {"phi_sr", "phi_cr"}
    assert grads_reach(cr, t["L_cr_gan"]) == {"phi_sr", "phi_cr"}
    assert grads_reach(cr, t["L_G"]) == {"phi_sr", "phi_cr"}
    with torch.no_grad():
        feat_real = cr.nets["phi_fr"].embed(y)
    assert grads_reach(cr, cr.disc_loss("D_prime", feat_real, feat_fake)[0]) == {"D_prime"}
    assert grads_reach(cr, cr.disc_loss("D", x_a, r)[0]) == {"D"}
    # Eq. 7 is mse(DS(phi_sr(r)), r) with the project's one DS
    with torch.no_grad():
        r2 = cr.nets["phi_cr"](x_g)
        expected = F.mse_loss(downsample(cr.nets["phi_sr"](r2)), r2)
    assert t["L_cr_sr"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_eq7_target_is_stop_gradient(real):
    """With phi_sr's input detached (cr_grad_into_phi_cr="none") phi_cr gets nothing from Eq. 7:
    had the target phi_cr(x_g) not been stop-gradient, phi_cr would receive gradient through it."""
    batch, n_ids = real
    cr = make(n_ids, cr_grad_into_phi_cr="none")
    cr.enter_stage("stage2")
    _, _, t = cr.joint_losses(pm(batch.hr), pm(batch.lr_artificial), pm(batch.lr_genuine))
    assert grads_reach(cr, t["L_cr_sr"]) == {"phi_sr"}
    assert grads_reach(cr, t["L_cr_gan"]) == {"phi_sr"}
    wo_cr = make(n_ids, variant="wo_cr")  # W/O CR: r := x_g, L_base has no L_cr
    wo_cr.enter_stage("stage2")
    _, _, t = wo_cr.joint_losses(pm(batch.hr), pm(batch.lr_artificial), pm(batch.lr_genuine))
    assert "L_cr" not in t
    expected = t["L_sr"] + 0.01 * t["L_cr_sr"] + 0.03 * t["L_cr_gan"]
    assert t["L_G"].item() == pytest.approx(expected.item(), rel=1e-6)


# ----- whole steps: only the stage's nets change; frozen nets stay frozen ------------------------------
def test_each_stage_updates_exactly_its_nets(real):
    batch, n_ids = real
    cr = make(n_ids)
    cr.train()
    for stage in ("stage1_sr", "stage1_fr", "stage1_cc", "stage2"):
        before = {k: state_hash(v) for k, v in cr.nets.items()}
        out = cr.train_step(stage, batch, 0)
        assert all(np.isfinite(v) for v in out.values()), out
        changed = {k for k, v in cr.nets.items() if state_hash(v) != before[k]}
        assert changed == set(TRAINED_NETS[stage]), stage


def test_phi_fr_frozen_in_eval_mode_through_stage2(real):
    batch, n_ids = real
    cr = make(n_ids)
    cr.train_step("stage1_fr", batch, 0)
    assert cr.nets["phi_fr"].training
    fr_hash = state_hash(cr.nets["phi_fr"])
    for step in range(2):
        cr.train_step("stage2", batch, step)
        cr.eval()
        cr.train()  # what a trainer does around sample grids
    assert not cr.nets["phi_fr"].training and not cr.nets["phi_cr_tilde"].training
    assert not any(p.requires_grad for p in cr.nets["phi_fr"].parameters())
    assert cr.nets["phi_sr"].training and cr.nets["phi_cr"].training
    assert state_hash(cr.nets["phi_fr"]) == fr_hash


def _bn_statistics(net: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var"))]


def _bn_training_modes(net: torch.nn.Module) -> set[bool]:
    return {m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}


@pytest.mark.parametrize("mode", ["frozen", "batch"])
def test_phi_sr_batch_norm_in_stage2(real, mode):
    """Stage 2 fine-tunes phi_sr with stage 1's batch-norm statistics ("frozen", the default:
    running statistics unchanged, BN layers in eval mode even after the trainer's train()) or with
    batch statistics ("batch": running statistics move)."""
    batch, n_ids = real
    cr = make(n_ids, sr_bn_stage2=mode)
    cr.train_step("stage1_sr", batch, 0)
    before = _bn_statistics(cr.nets["phi_sr"])
    assert before  # phi_sr has batch norm: the comparisons below are not vacuous
    weights = state_hash(cr.nets["phi_sr"].head)
    for step in range(2):
        cr.train_step("stage2", batch, step)
        cr.eval()
        cr.train()
    after = _bn_statistics(cr.nets["phi_sr"])
    bn_modes = _bn_training_modes(cr.nets["phi_sr"])
    assert state_hash(cr.nets["phi_sr"].head) != weights  # phi_sr still trains
    if mode == "frozen":
        assert all(torch.equal(a, b) for a, b in zip(before, after))
        assert bn_modes == {False} and cr.nets["phi_sr"].training
        cr.train_step("stage1_sr", batch, 1)  # leaving stage 2 restores batch statistics
        assert _bn_training_modes(cr.nets["phi_sr"]) == {True}
    else:
        assert not all(torch.equal(a, b) for a, b in zip(before, after))
        assert bn_modes == {True}
    with pytest.raises(ValueError, match="sr_bn_stage2"):
        make(n_ids, sr_bn_stage2="sync")


@pytest.mark.parametrize("mode", ["fixed", "batch"])
def test_phi_cr_batch_norm_in_stage1_cc(real, mode):
    """phi_cr and phi~_cr run their batch norm on fixed statistics ("fixed", the default): the
    statistics never move, the layers stay in eval mode through every CC step (which also runs
    phi~_cr in eval mode for Eq. 6) and the trainer's eval()/train(), so phi_cr computes the same
    in training as at inference; "batch" restores batch statistics."""
    batch, n_ids = real
    cr = make(n_ids, cr_bn=mode)
    nets = [cr.nets["phi_cr"], cr.nets["phi_cr_tilde"]]
    before = [_bn_statistics(n) for n in nets]
    assert all(before)
    for step in range(2):
        cr.train_step("stage1_cc", batch, step)
        cr.eval()
        cr.train()
    x_g = pm(batch.lr_genuine)
    with torch.no_grad():
        train_out = cr.nets["phi_cr"](x_g)
        cr.eval()
        eval_out = cr.nets["phi_cr"](x_g)
        cr.train()
    moved = [not all(torch.equal(a, b) for a, b in zip(s0, _bn_statistics(n))) for s0, n in zip(before, nets)]
    if mode == "fixed":
        assert moved == [False, False] and all(_bn_training_modes(n) == {False} for n in nets)
        assert torch.equal(train_out, eval_out)
    else:
        assert moved == [True, True] and all(_bn_training_modes(n) == {True} for n in nets)
        assert not torch.equal(train_out, eval_out)
    assert not torch.equal(cr.nets["phi_cr"].tail.weight, torch.zeros_like(cr.nets["phi_cr"].tail.weight))
    with pytest.raises(ValueError, match="cr_bn"):
        make(n_ids, cr_bn="group")


def test_gradient_norms_and_probes(real):
    """With grad_norm_every, a step reports each weighted term's gradient norm on the net it
    trains, equal to an independent autograd computation; probes measure phi_cr's residual."""
    batch, n_ids = real
    cr = make(n_ids, grad_norm_every=1, lambda_rec=3.0, tilde_lowpass_l1=2.0, cr_lowpass_l1=1.0)
    cr.train_step("stage1_cc", batch, 0)  # move phi_cr away from the identity
    torch.manual_seed(1)
    x_a, x_g = pm(batch.lr_artificial), pm(batch.lr_genuine)
    state = {k: v.clone() for k, v in cr.nets["phi_cr"].state_dict().items()}
    out = cr.train_step("stage1_cc", batch, 1)
    for key in ("gn_L_cr_rec_phi_cr", "gn_L_gan_phi_cr", "gn_L_cr_lowpass_phi_cr", "gn_L_gan_tilde_phi_cr_tilde",
                "gn_L_tilde_lowpass_phi_cr_tilde"):
        assert key in out and math.isfinite(out[key]) and out[key] >= 0, key
    # recompute the reconstruction term's gradient norm on the phi_cr of before the step
    cr.nets["phi_cr"].load_state_dict(state)
    rec = cr.config.lambda_rec * cr.cr_losses(x_a, x_g, cr.nets["phi_cr"](x_g))["L_cr_rec"]
    grads = torch.autograd.grad(rec, [p for p in cr.nets["phi_cr"].parameters()])
    assert out["gn_L_cr_rec_phi_cr"] == pytest.approx(math.sqrt(sum(float(g.pow(2).sum()) for g in grads)), rel=1e-4)
    assert "gn_L_cr_rec_phi_cr" not in make(n_ids).train_step("stage1_cc", batch, 0)  # off by default
    probes = cr.probe(batch.lr_genuine, batch.lr_artificial)
    assert set(probes) == {f"probe_{s}_{k}" for s in ("genuine", "artificial") for k in ("rms", "fixed_share")}
    assert all(0 <= probes[f"probe_{s}_fixed_share"] <= 1 and probes[f"probe_{s}_rms"] > 0
               for s in ("genuine", "artificial"))
    assert make(n_ids, variant="wo_cr").probe(batch.lr_genuine, batch.lr_artificial) == {}


# ----- inference -----------------------------------------------------------------------------------
def test_inference_paths_shapes_and_ranges(real):
    batch, n_ids = real
    cr = make(n_ids).eval()
    with torch.no_grad():
        # phi_cr starts as the identity (zero-initialised tail, global skip)
        assert torch.allclose(cr.regulate(batch.lr_genuine), batch.lr_genuine, atol=1e-6)
        cr.nets["phi_cr"].tail.weight.normal_(0, 0.1)
        genuine = cr.super_resolve(batch.lr_genuine)
        artificial = cr.super_resolve(batch.lr_genuine, artificial=True)
        regulated = cr.regulate(batch.lr_genuine)
        direct = cr.nets["phi_sr"](pm(batch.lr_genuine)).add(1).div(2).clamp(0, 1)
        via_cr = cr.nets["phi_sr"](cr.nets["phi_cr"](pm(batch.lr_genuine))).add(1).div(2).clamp(0, 1)
    assert genuine.shape == artificial.shape == (B, 3, 64, 64)
    assert regulated.shape == (B, 3, 16, 16)
    for out in (genuine, artificial, regulated):
        assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(artificial, direct)  # artificial LR (Helen) skips phi_cr
    assert torch.equal(genuine, via_cr)  # genuine LR goes through phi_cr
    assert not torch.equal(genuine, artificial)
    wo_cr = make(n_ids, variant="wo_cr").eval()
    with torch.no_grad():
        assert wo_cr.regulate(batch.lr_genuine) is None
        assert torch.equal(wo_cr.super_resolve(batch.lr_genuine), wo_cr.super_resolve(batch.lr_genuine, True))


def test_state_round_trips_through_weights_only_checkpoint(real):
    batch, n_ids = real
    cr = make(n_ids)
    cr.train_step("stage1_cc", batch, 0)
    buf = io.BytesIO()
    torch.save(cr.state_dict(), buf)
    buf.seek(0)
    other = make(n_ids)
    other.nets["phi_cr"].tail.weight.data.fill_(0.5)
    other.load_state_dict(torch.load(buf, weights_only=True))
    cr.eval(), other.eval()
    with torch.no_grad():
        assert torch.equal(cr.super_resolve(batch.lr_genuine), other.super_resolve(batch.lr_genuine))
    assert state_hash(cr.nets["D"]) == state_hash(other.nets["D"])  # incl. spectral-norm vectors


# ----- options and bad input ---------------------------------------------------------------------------
def test_options(real):
    batch, n_ids = real
    logits = torch.tensor([-2.0, 0.3, 1.5])
    assert torch.equal(make(gan_form="saturating")._g_adv(logits), -bce_fake(logits))
    cr = make(n_ids, cc_tilde_warmup=1)
    phi_cr = state_hash(cr.nets["phi_cr"])
    out = cr.train_step("stage1_cc", batch, 0)  # warm-up: only D~ and phi~_cr
    assert "L_D" not in out and state_hash(cr.nets["phi_cr"]) == phi_cr
    assert "L_D" in cr.train_step("stage1_cc", batch, 1)
    # the cpu preset's stage1_sr: MSE only (no D_sr step) at its own learning rate
    mse_only = make(n_ids, sr_adv_weight=0.0, sr_lr=5e-4)
    d_sr = state_hash(mse_only.nets["D_sr"])
    assert set(mse_only.train_step("stage1_sr", batch, 0)) == {"L_sr"}
    assert state_hash(mse_only.nets["D_sr"]) == d_sr
    assert mse_only.optimizers["phi_sr"].param_groups[0]["lr"] == 5e-4
    assert mse_only.optimizers["G"].param_groups[0]["lr"] == 1e-4  # stage 2 keeps the paper's lr
    # sr_lr_schedule="cosine": sr_lr at step 0, half at mid-stage, near 0 at the end, for phi_sr
    # and D_sr alike, and set by the step alone (a resumed run continues the same schedule)
    cosine = make(n_ids, sr_lr=5e-4, sr_iterations=10, sr_lr_schedule="cosine")
    for step, expected in ((0, 5e-4), (5, 2.5e-4), (9, 5e-4 * (1 + math.cos(0.9 * math.pi)) / 2)):
        cosine.train_step("stage1_sr", batch, step)
        for name in ("phi_sr", "D_sr"):
            assert cosine.optimizers[name].param_groups[0]["lr"] == pytest.approx(expected)
    assert make(n_ids, sr_lr=5e-4, sr_iterations=10).sr_learning_rate(9) == 5e-4  # the paper's
    with pytest.raises(ValueError, match="sr_lr_schedule"):
        make(n_ids, sr_lr_schedule="step")


def test_small_data_options(real):
    """d_input, d_augment and cr_lowpass_l1 (off in the paper preset) do what they say."""
    batch, n_ids = real
    x_a, x_g = pm(batch.lr_artificial), pm(batch.lr_genuine)
    paper = make(n_ids)
    assert (paper.config.d_input, paper.config.d_augment, paper.config.cr_lowpass_l1) == ("raw", (), 0.0)
    assert "L_cr_lowpass" not in paper.cr_losses(x_a, x_g, paper.nets["phi_cr"](x_g))
    # zero_mean: D and D~ cannot see a per-image colour offset; the raw D and D~ can
    blind = make(n_ids, d_input="zero_mean")
    blind.train(False), paper.train(False)  # fixed spectral-norm vectors: logits comparable
    offset = torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    for name in ("D", "D_tilde"):
        assert torch.allclose(blind._judge(name, x_g), blind._judge(name, x_g + offset), atol=1e-5)
        assert not torch.allclose(paper._judge(name, x_g), paper._judge(name, x_g + offset), atol=1e-3)
    # highpass: D and D~ cannot see a colour offset either, but they do see noise
    sharp = make(n_ids, d_input="highpass")
    sharp.train(False)
    for name in ("D", "D_tilde"):
        assert torch.allclose(sharp._judge(name, x_g), sharp._judge(name, x_g + offset), atol=1e-5)
        assert not torch.allclose(sharp._judge(name, x_g), sharp._judge(name, x_g + torch.randn_like(x_g) * 0.1),
                                  atol=1e-3)  # noise is high-frequency: seen
    # the low-pass anchor: l1 of 4x4 mean pools, in L_cr, and it reaches phi_cr only
    anchored = make(n_ids, cr_lowpass_l1=2.0)
    anchored.enter_stage("stage1_cc")
    anchored.nets["phi_cr"].tail.weight.data.normal_(0, 0.1)  # away from the identity
    r = anchored.nets["phi_cr"](x_g)
    t = anchored.cr_losses(x_a, x_g, r)
    expected = (F.avg_pool2d(r, 4) - F.avg_pool2d(x_g, 4)).abs().mean()
    assert torch.allclose(t["L_cr_lowpass"], expected) and t["L_cr_lowpass"] > 0
    assert torch.allclose(t["L_cr"], t["L_cr_rec"] + 0.2 * t["L_gan"] + 2.0 * expected)
    assert grads_reach(anchored, t["L_cr_lowpass"]) == {"phi_cr"}
    # DiffAugment of D's inputs: still only D learns from its step, phi_cr from Eq. 6
    aug = make(n_ids, d_augment=("translation", "cutout"))
    aug.enter_stage("stage1_cc")
    r = aug.nets["phi_cr"](x_g)
    assert grads_reach(aug, aug.disc_loss("D", x_a, r)[0]) == {"D"}
    assert grads_reach(aug, aug.cr_losses(x_a, x_g, r)["L_gan"]) == {"phi_cr"}
    for key, value in (("d_input", "grey"), ("d_augment", ("colour",))):
        with pytest.raises(ValueError, match=key):
            make(n_ids, **{key: value})


def test_d_prime_augment_option(real):
    """d_prime_augment: D' judges phi_fr features of augmented faces, real and fake alike, with
    the routing of Eq. 8 unchanged; off by default (the paper's D' sees the faces as they are)."""
    batch, n_ids = real
    y, x_a, x_g = pm(batch.hr), pm(batch.lr_artificial), pm(batch.lr_genuine)
    paper = make(n_ids)
    paper.enter_stage("stage2")
    assert paper.config.d_prime_augment == ()
    assert torch.equal(paper._fr_features(y, augment=True), paper._fr_features(y))
    aug = make(n_ids, d_prime_augment=("translation", "cutout"))
    aug.enter_stage("stage2")
    torch.manual_seed(0)
    seen = aug._fr_features(y, augment=True)
    assert seen.shape == (len(y), 512) and not torch.allclose(seen, aug._fr_features(y), atol=1e-3)
    torch.manual_seed(0)  # the augmentation is the only randomness: same draw, same features
    assert torch.equal(aug._fr_features(y, augment=True), seen)
    r, feat_fake, t = aug.joint_losses(y, x_a, x_g)
    assert grads_reach(aug, t["L_cr_gan"]) == {"phi_sr", "phi_cr"}
    assert grads_reach(aug, aug.disc_loss("D_prime", seen, feat_fake)[0]) == {"D_prime"}
    assert "L_D_prime" in aug.train_step("stage2", batch, 0)
    with pytest.raises(ValueError, match="d_prime_augment"):
        make(n_ids, d_prime_augment=("colour",))


def test_common_highband_option(real):
    """cr_common_hp: the energy of the batch's shared residual above the 4x4 low pass, in L_cr,
    reaching phi_cr only; one texture added to every real face is penalised, a colour shift or
    a different texture per face much less."""
    batch, n_ids = real
    x_a, x_g = pm(batch.lr_artificial), pm(batch.lr_genuine)
    gen = torch.Generator().manual_seed(0)
    texture = torch.randn(1, 3, 16, 16, generator=gen) * 0.05
    per_face = torch.randn(x_g.shape, generator=gen) * 0.05
    shared, independent = common_highband_energy(texture.expand_as(x_g)), common_highband_energy(per_face)
    assert shared > 0.5 * 0.05 ** 2 and independent < 2 * shared / len(x_g)  # ~1/N of it for N faces
    assert common_highband_energy(torch.full_like(x_g, 0.2)) < 1e-12  # brightness shift: free
    cr = make(n_ids, cr_common_hp=50.0)
    cr.enter_stage("stage1_cc")
    cr.nets["phi_cr"].tail.weight.data.normal_(0, 0.1)  # away from the identity
    r = cr.nets["phi_cr"](x_g)
    t = cr.cr_losses(x_a, x_g, r)
    assert torch.allclose(t["L_cr_common"], common_highband_energy(r - x_g)) and t["L_cr_common"] > 0
    assert torch.allclose(t["L_cr"], t["L_cr_rec"] + 0.2 * t["L_gan"] + 50.0 * t["L_cr_common"])
    assert grads_reach(cr, t["L_cr_common"]) == {"phi_cr"}
    assert "L_cr_common" not in make(n_ids).cr_losses(x_a, x_g, r)


def test_tilde_noise_option(real):
    """tilde_noise: phi~_cr sees fresh noise channels, so one face gives different pseudo-genuine
    faces on two calls (in eval mode too, as Eq. 6's input); the gradient routing of Eq. 5 and
    Eq. 6 is unchanged, and phi_cr itself stays deterministic."""
    batch, n_ids = real
    x_a, x_g = pm(batch.lr_artificial), pm(batch.lr_genuine)
    noisy = make(n_ids, tilde_noise=2)
    assert noisy.nets["phi_cr_tilde"].head[0].in_channels == 5 and noisy.nets["phi_cr"].head[0].in_channels == 3
    noisy.enter_stage("stage1_cc")
    for net in ("phi_cr_tilde", "phi_cr"):
        noisy.nets[net].tail.weight.data.normal_(0, 0.1)  # away from the identity
    a, b = noisy._pseudo_genuine(x_a), noisy._pseudo_genuine(x_a)
    assert a.shape == x_a.shape and (a - b).abs().mean() > 1e-4
    assert torch.equal(noisy.nets["phi_cr"](x_g), noisy.nets["phi_cr"](x_g))
    pseudo = noisy.nets["phi_cr_tilde"](x_a)
    assert grads_reach(noisy, noisy.tilde_generator_losses(x_a, pseudo)["L_gan_tilde"]) == {"phi_cr_tilde"}
    assert grads_reach(noisy, noisy.cr_losses(x_a, x_g, noisy.nets["phi_cr"](x_g))["L_cr_rec"]) == {"phi_cr"}
    assert make(n_ids).nets["phi_cr_tilde"].head[0].in_channels == 3  # off by default (the paper)
    with pytest.raises(ValueError, match="tilde_noise"):
        make(n_ids, tilde_noise=-1)


def test_bad_input_is_reported(real):
    batch, n_ids = real
    cr = make(n_ids)
    with pytest.raises(ValueError, match="lr_genuine"):
        cr.train_step("stage1_cc", Batch(lr_artificial=batch.lr_artificial), 0)
    with pytest.raises(ValueError, match="unknown stage"):
        cr.train_step("stage3", batch, 0)
    with pytest.raises(ValueError, match="unknown stage"):
        make(n_ids, variant="wo_srri").train_step("stage2", batch, 0)
    with pytest.raises(ValueError, match="n_identities=0"):
        make(0).train_step("stage1_fr", batch, 0)
    before = state_hash(cr.nets["phi_fr"])
    with pytest.raises(ValueError, match=r"identities must be in \[0, "):
        cr.train_step("stage1_fr", Batch(hr=batch.hr, identity=batch.identity + n_ids), 0)
    with pytest.raises(ValueError, match="unlabelled faces are -1"):
        cr.train_step("stage1_fr", Batch(hr=batch.hr, identity=torch.full((B,), -1)), 0)
    assert state_hash(cr.nets["phi_fr"]) == before


# ----- short training runs on real faces ------------------------------------------------------------
@pytest.mark.slow
def test_smoke_training_on_real_faces(real):
    """A few steps of every stage on real sample faces: L_sr falls, the CentreFace loss falls,
    and the CC / stage-2 GAN losses behave like GAN losses (finite, bounded, no discriminator
    that has already won or lost outright)."""
    batch, n_ids = real
    cr = make(n_ids)
    sr = [cr.train_step("stage1_sr", batch, i)["L_sr"] for i in range(4)]
    assert sr[-1] < 0.8 * sr[0], sr
    fr = [cr.train_step("stage1_fr", batch, i) for i in range(3)]
    assert fr[-1]["L_fr_softmax"] < fr[0]["L_fr_softmax"]
    cc = [cr.train_step("stage1_cc", batch, i) for i in range(4)]
    joint = [cr.train_step("stage2", batch, i) for i in range(2)]
    for out in cc + joint:
        assert all(np.isfinite(v) for v in out.values()), out
        for d in ("L_D", "L_D_tilde", "L_D_prime"):
            if d in out:  # log loss of a discriminator that neither won nor is lost: ~2 ln 2
                assert 0.2 < out[d] < 3.0, (d, out)
        for g in ("L_gan", "L_gan_tilde", "L_cr_gan"):
            if g in out:
                assert 0.05 < out[g] < 5.0, (g, out)
    accs = [out[k] for out in cc + joint for k in ("acc_D", "acc_D_tilde") if k in out]
    assert 0.25 <= float(np.mean(accs)) < 1.0  # discriminators learn but have not collapsed
    assert joint[-1]["L_sr"] < sr[0]


@pytest.mark.slow
def test_smoke_preset_trains_through_the_engine(tmp_path, sample_dir):
    """`lrfb train cr --preset smoke` on the embedded sample: every stage runs, every loss term
    is logged, and the exported deployed nets super-resolve genuine LR."""
    from lrfacebench.runs import load_method
    from lrfacebench.training.loop import train

    out = train("cr", "smoke", out=tmp_path / "run", device="cpu", seed=0,
                overrides=["engine.keep_stage_checkpoints=false"])
    with open(out / "metrics.csv", newline="") as f:
        logged = {(r["stage"], r["name"]) for r in csv.DictReader(f)}
    assert {s for s, _ in logged} == set(TRAINED_NETS)
    for stage, term in [("stage1_sr", "L_sr"), ("stage1_sr", "L_D_sr"), ("stage1_fr", "L_fr_centre"),
                        ("stage1_cc", "L_gan_tilde"), ("stage1_cc", "L_cr_rec"), ("stage2", "L_cr_sr"),
                        ("stage2", "L_cr_gan"), ("stage2", "L_D_prime"), ("stage2", "L_G")]:
        assert (stage, term) in logged
    deployed = load_method(out)
    assert set(deployed.deployed) == {"phi_cr", "phi_sr"}
    lr = _load(sample_dir, [{"path": p} for p in sorted(
        f"genuine_lr/{q.name}" for q in (sample_dir / "genuine_lr").glob("*.png"))[:2]], 16)
    with torch.no_grad():
        sr = deployed.super_resolve(lr)
    assert sr.shape == (2, 3, 64, 64) and 0 <= sr.min() and sr.max() <= 1
