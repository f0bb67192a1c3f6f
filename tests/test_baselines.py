"""Baselines VDSR, SRGAN, CycleGAN, LRGAN behind the Method interface, on the sample's real faces.

Real architectures are only constructed (parameter counts, state-dict layouts); training runs use
the ``smoke`` presets' small networks.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrfacebench.cli.sr import sr_command
from lrfacebench.degrade import downsample, imresize, upsample
from lrfacebench.io import list_images, load_checkpoint, read_rgb, save_checkpoint, sha256_file
from lrfacebench.methods import Batch, Method, get_method
from lrfacebench.weights import WeightError

BASELINES = [("vdsr", "default"), ("srgan", "mse_adv"), ("cyclegan", "default"),
             ("cyclegan", "native"), ("lrgan", "default"), ("lrgan", "official")]


def _load(folder: Path, size: int, n: int) -> torch.Tensor:
    """``n`` images spread over ``folder`` (sorted), each resized to ``(3,size,size)``; [0,1]."""
    paths = list_images(folder)
    paths = paths[:: max(1, len(paths) // n)][:n]
    imgs = [imresize(torch.from_numpy(read_rgb(p)).permute(2, 0, 1)[None].float() / 255, (size, size))
            for p in paths]
    return torch.cat(imgs).clamp(0, 1)


@pytest.fixture(scope="module")
def faces(sample_dir: Path) -> dict[str, torch.Tensor]:
    """Real sample faces: 48 HR (64x64), their DS (16x16), and 48 genuine LR (16x16)."""
    hr = _load(sample_dir / "hr", 64, 48)
    return {"hr": hr, "lr_artificial": downsample(hr).clamp(0, 1),
            "lr_genuine": _load(sample_dir / "genuine_lr", 16, 48)}


def _build(name: str, variant: str, preset: str = "smoke", seed: int = 0, **over) -> Method:
    torch.manual_seed(seed)
    cls = get_method(name)
    return cls(cls.make_config(preset, variant, over))


def _batch(faces: dict[str, torch.Tensor], idx: torch.Tensor) -> Batch:
    return Batch(hr=faces["hr"][idx], lr_artificial=faces["lr_artificial"][idx],
                 lr_genuine=faces["lr_genuine"][idx.flip(0)])


def _sr_three_sample_faces(run: Path, sample_dir: Path, tmp_path: Path) -> list[np.ndarray]:
    """``lrfb sr RUN`` on three of the sample's genuine LR crops: their (64,64,3) uint8 outputs."""
    faces = sorted((sample_dir / "genuine_lr").glob("*.png"))[:3]
    src = tmp_path / "in"
    src.mkdir()
    for p in faces:
        (src / p.name).write_bytes(p.read_bytes())
    res = CliRunner().invoke(sr_command, [str(run), str(src), "--out", str(tmp_path / "sr")])
    assert res.exit_code == 0, res.output
    outs = [read_rgb(tmp_path / "sr" / p.name) for p in faces]
    assert all(o.shape == (64, 64, 3) for o in outs)
    return outs


def _nets_with_grad(method: Method) -> set[str]:
    return {k for k, net in method.nets.items()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())}


def _record_steps(method: Method) -> list[tuple[str, set[str]]]:
    """Wrap every optimiser's ``step`` to record which nets hold gradients when it runs."""
    log: list[tuple[str, set[str]]] = []
    for key, opt in method.optimizers.items():
        def step(*a, _key=key, _orig=opt.step, **kw):
            log.append((_key, _nets_with_grad(method)))
            return _orig(*a, **kw)
        opt.step = step
    return log


# ----- architectures --------------------------------------------------------------------------
def test_paper_architectures_parameter_counts() -> None:
    vdsr = _build("vdsr", "default", "paper")
    convs = [m for m in vdsr.nets["vdsr"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(c.bias is None for c in convs)
    assert vdsr.parameter_counts()["deployed"] == 667_008

    srgan = _build("srgan", "default", "paper")
    assert srgan.config.variant == "mse_adv"  # the default says that its content loss deviates
    assert round(srgan.parameter_counts()["g"] / 1e6, 2) == 1.55  # methods.md: SRResNet 1.55M
    n_res = sum(type(m).__name__ == "ResidualBlock" for m in srgan.nets["g"].modules())
    assert n_res == 16

    cyc = _build("cyclegan", "default", "paper").parameter_counts()
    assert round((cyc["g_a"] + cyc["g_b"]) / 1e6, 1) == 22.8  # methods.md: two ResNet-9 G 22.8M
    assert cyc["deployed"] == cyc["g_a"]

    official = _build("lrgan", "official", "paper").parameter_counts()
    assert round(official["g_l2h"] / 1e6, 2) == 15.49  # methods.md: official L2H 15.49M
    paper = _build("lrgan", "default", "paper").parameter_counts()
    assert paper["g_l2h"] > official["g_l2h"]  # the paper layout builds the third group


@pytest.mark.parametrize("name,variant", BASELINES)
def test_super_resolve_real_faces(faces, name: str, variant: str) -> None:
    m = _build(name, variant).eval()
    for artificial, lr in ((False, faces["lr_genuine"][:6]), (True, faces["lr_artificial"][:6])):
        with torch.no_grad():
            sr = m.super_resolve(lr, artificial=artificial)
        assert sr.shape == (6, 3, 64, 64) and sr.dtype == torch.float32
        assert torch.isfinite(sr).all() and sr.min() >= 0 and sr.max() <= 1
        assert sr.std() > 0  # not a constant image
    counts = m.parameter_counts()
    assert counts["deployed"] == sum(counts[k] for k in m.deployed) > 0


def test_vdsr_adds_the_bicubic_input_back(faces) -> None:
    m = _build("vdsr", "default").eval()
    torch.nn.init.zeros_(m.nets["vdsr"].residual[-1].weight)  # residual branch outputs 0
    lr = faces["lr_genuine"][:4]
    with torch.no_grad():
        assert torch.allclose(m.super_resolve(lr), upsample(lr, 4).clamp(0, 1))


def test_vdsr_schedule_and_adjustable_clipping(faces) -> None:
    m = _build("vdsr", "default", lr_step=5, clip="adjustable", clip_theta=1e-4)
    assert [m.lr_at(s) for s in (0, 4, 5, 10)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    before = [p.detach().clone() for p in m.nets["vdsr"].parameters()]
    out = m.train_step("train", _batch(faces, torch.arange(8)), 0)
    # each gradient element clipped to theta/lr: the first SGD step moves no weight by more than theta
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(m.nets["vdsr"].parameters(), before))
    assert 0 < moved <= 1e-4 + 1e-6  # + lr * weight decay * |w| (< 1e-6 here)
    assert out["lr"] == 0.01 and out["loss"] > 0


# ----- gradient routing -----------------------------------------------------------------------
def test_routing_vdsr_and_srgan(faces) -> None:
    batch = _batch(faces, torch.arange(8))
    vdsr = _build("vdsr", "default")
    log = _record_steps(vdsr)
    vdsr.train_step("train", batch, 0)
    assert log == [("vdsr", {"vdsr"})]

    srgan = _build("srgan", "mse_adv")
    log = _record_steps(srgan)
    srgan.train_step("pretrain", batch, 0)
    srgan.train_step("adversarial", batch, 0)
    # G step: D frozen; D step: SR detached, so G receives nothing
    assert log == [("g_pretrain", {"g"}), ("g", {"g"}), ("d", {"d"})]


def test_routing_cyclegan_and_pool_feeds_d_only(faces) -> None:
    m = _build("cyclegan", "default")
    log = _record_steps(m)
    m.train_step("train", _batch(faces, torch.arange(4)), 0)
    assert log == [("g", {"g_a", "g_b"}), ("d", {"d_a", "d_b"})]
    # after the pool is full (smoke: 6 images), half of the D's fakes come from history
    for i in range(3):
        m.train_step("train", _batch(faces, torch.arange(4) + 4 * i), i + 1)
    stored = m.pools["b"].images
    assert stored.shape == (6, 3, 64, 64) and not stored.requires_grad
    fresh = (torch.arange(32.0) + 5).view(32, 1, 1, 1).expand(32, 3, 64, 64)  # recognisable values
    out = m.pools["b"].query(fresh)
    from_history = (out != fresh).flatten(1).all(1).sum().item()  # swapped for a stored image
    assert 6 <= from_history <= 26 and not out.requires_grad


def test_cyclegan_resume_through_a_checkpoint_is_exact(tmp_path, faces) -> None:
    """Nets, optimisers and the image pools (contents + random state) survive a weights-only
    checkpoint: 3 steps + resume + 3 steps equals 6 uninterrupted steps, bit for bit."""
    batches = [_batch(faces, torch.arange(4) + 4 * i) for i in range(6)]
    full = _build("cyclegan", "native", seed=1)
    for i, b in enumerate(batches):
        full.train_step("train", b, i)
    part = _build("cyclegan", "native", seed=1)
    for i, b in enumerate(batches[:3]):  # 12 fakes: the pools (6) are full and swapping
        part.train_step("train", b, i)
    save_checkpoint(tmp_path / "c.pt", part.state_dict())
    resumed = _build("cyclegan", "native", seed=2)
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt"))
    for i, b in enumerate(batches[3:], 3):
        resumed.train_step("train", b, i)
    for name, net in full.nets.items():
        other = resumed.nets[name].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in net.state_dict().items()), name
    for k in ("a", "b"):
        assert torch.equal(full.pools[k].images, resumed.pools[k].images)


def test_routing_lrgan_h2l_detached_and_z_resampled(faces) -> None:
    m = _build("lrgan", "default")
    batch = _batch(faces, torch.arange(8))
    log = _record_steps(m)
    m.train_step("train", batch, 0)
    d_nets, g_nets = {"d_h2l", "d_l2h"}, {"g_h2l", "g_l2h"}
    assert log == [("d_h2l", d_nets), ("d_l2h", d_nets), ("g_h2l", g_nets), ("g_l2h", g_nets)]

    hr = batch.hr * 2 - 1
    lr_gen, hr_gen = m.forward_pair(hr)
    g = m.generator_losses(hr, lr_gen, hr_gen)
    m.zero_grad()
    (g["pixel_l2h"] + g["gan_l2h"]).backward(retain_graph=True)
    assert "g_h2l" not in _nets_with_grad(m)  # the L2H loss never reaches H2L
    assert "g_l2h" in _nets_with_grad(m)
    m.zero_grad()
    (g["pixel_h2l"] + g["gan_h2l"]).backward()
    assert "g_l2h" not in _nets_with_grad(m) and "g_h2l" in _nets_with_grad(m)
    with torch.no_grad():  # a fresh z on every call
        assert not torch.allclose(m.degrade(hr), m.degrade(hr))


# ----- smoke training on real faces lowers the main loss ----------------------------------------
def _train_first_stage(m: Method, faces) -> None:
    """The whole first stage of the smoke preset, on batches of the sample's real faces."""
    stage = m.stages()[0]
    g = torch.Generator().manual_seed(0)
    for step in range(stage.iterations):
        m.train_step(stage.name, _batch(faces, torch.randperm(48, generator=g)[:stage.batch_size]), step)


def _eval_loss(m: Method, faces, fn) -> float:
    torch.manual_seed(123)  # same z for LRGAN before and after
    with torch.no_grad():
        return fn(m, _batch(faces, torch.arange(48)))


MAIN_LOSSES = {  # the generator's main loss, on all 48 faces
    "vdsr": lambda m, b: m.loss(b)["mse"].item(),
    "srgan": lambda m, b: m.generator_losses(b, adversarial=False)["mse"].item(),
    "cyclegan": lambda m, b: (lambda g: (g["cycle_a"] + g["cycle_b"]).item())(
        m.generator_losses(m.domain_a(b.lr_genuine), b.hr * 2 - 1)),
    "lrgan": lambda m, b: (lambda g: (g["pixel_h2l"] + g["pixel_l2h"]).item())(
        m.generator_losses(b.hr * 2 - 1, *m.forward_pair(b.hr * 2 - 1))),
}


@pytest.mark.parametrize("name", sorted(MAIN_LOSSES))
def test_smoke_training_lowers_main_loss(faces, name: str) -> None:
    m = _build(name, "default")
    before = _eval_loss(m, faces, MAIN_LOSSES[name])
    _train_first_stage(m, faces)
    after = _eval_loss(m, faces, MAIN_LOSSES[name])
    assert after < 0.8 * before, (name, before, after)


def test_srgan_adversarial_stage_runs_and_decays_lr(faces) -> None:
    m = _build("srgan", "default")
    out = m.train_step("adversarial", _batch(faces, torch.arange(8)), 0)
    assert set(out) == {"mse", "content", "adv", "g_total", "d", "lr"}
    assert out["g_total"] == pytest.approx(out["content"] + 1e-3 * out["adv"], rel=1e-5)
    late = m.train_step("adversarial", _batch(faces, torch.arange(8)), m.config.adversarial_iterations - 1)
    assert late["lr"] == pytest.approx(m.config.lr / 10)


# ----- SRGAN VGG19 content loss: user weights checked by hash ------------------------------------
def test_srgan_vgg19_needs_verified_weights(tmp_path, faces) -> None:
    with pytest.raises(WeightError, match="vgg19_weights"):
        _build("srgan", "vgg19")
    with pytest.raises(WeightError, match="not found"):
        _build("srgan", "vgg19", vgg19_weights=str(tmp_path / "missing.pth"))
    from torchvision.models.vgg import cfgs, make_layers

    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}, path)
    with pytest.raises(WeightError, match="sha256"):  # not torchvision's file
        _build("srgan", "vgg19", vgg19_weights=str(path))
    m = _build("srgan", "vgg19", vgg19_weights=str(path), vgg19_sha256=sha256_file(path))
    b = _batch(faces, torch.arange(4))
    losses = m.generator_losses(b, adversarial=True)
    assert losses["content"] != losses["mse"]
    losses["total"].backward()
    assert all(p.grad is None for p in m.vgg.parameters())
    assert all(p.grad is not None for p in m.nets["g"].parameters())


# ----- LRGAN: the official released layout --------------------------------------------------------
def _official_keys() -> set[str]:
    """State-dict keys of the official GEN_DEEP, written out from its source (model.py)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"layers_in.weight", "a1.0.weight", "a1.0.bias", "a2.0.weight", "a2.0.bias",
            "main.0.weight", "main.2.weight", "main.2.bias", "main.4.weight", "main.4.bias",
            "layers_set_final.1.0.skip.weight", "layers_set_final.1.0.skip.bias"}
    for group, n in ((0, 12), (1, 3)):
        for i in range(n):
            prefix = f"layers_set_final.{group}.{i}"
            keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
            keys |= {f"{prefix}.{b}.{s}" for b in ("bn1", "bn2") for s in bn}
        keys |= {f"layers_set_final_up.{group}.1.{s}" for s in bn}
        keys |= {f"layers_set_final_up.{group}.3.{s}" for s in ("weight", "bias")}
    return keys


def _randomised(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s state dict with every float entry random (BN statistics too; variances > 0), so
    that a wrongly mapped tensor changes the output."""
    state = {}
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            v = torch.randn_like(v) * 0.05
            v = v.abs() + 0.5 if k.endswith("running_var") else v
        state[k] = v
    return state


def test_lrgan_official_state_dict_loads_strictly(tmp_path, faces) -> None:
    from lrfacebench.baselines.lrgan import LRGAN, L2HGenerator, load_official_l2h

    torch.manual_seed(3)
    state = _randomised(L2HGenerator(layout="official"))
    assert set(state) == _official_keys()
    path = tmp_path / "model.pkl"
    torch.save(state, path)
    method = LRGAN.from_official(path)
    assert method.config.variant == "official"
    loaded = method.nets["g_l2h"].state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)

    # exported as lrfacebench weights, the trainer's loader (used by lrfb sr / benchmark) takes it
    from lrfacebench.runs import export_final, load_method

    export_final(method, tmp_path / "lrgan_official.pt")
    again = load_method(tmp_path / "lrgan_official.pt")
    lr = faces["lr_genuine"][:2]
    with torch.no_grad():
        assert torch.equal(again.super_resolve(lr), method.eval().super_resolve(lr))

    # a DataParallel-prefixed checkpoint from PyTorch < 0.4.1 (no num_batches_tracked) converts
    # (narrow widths from here on: the keys do not depend on them)
    small = dict(channels=(16, 8, 8), blocks=(12, 3, 2))
    reference = L2HGenerator(**small, layout="official").eval()
    reference.load_state_dict(_randomised(reference))
    legacy = {f"module.{k}": v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "legacy.pkl")
    net = load_official_l2h(tmp_path / "legacy.pkl", **small).eval()
    with torch.no_grad():
        assert torch.equal(net(lr * 2 - 1), reference(lr * 2 - 1))
    state = reference.state_dict()

    wrong = dict(state)
    wrong["layers_set_final.2.0.conv1.weight"] = torch.zeros(1)  # a third group: not the release
    torch.save(wrong, tmp_path / "wrong.pkl")
    with pytest.raises(ValueError, match="unexpected keys"):
        load_official_l2h(tmp_path / "wrong.pkl", **small)


def test_lrgan_legacy_minmax_is_opt_in(faces) -> None:
    m = _build("lrgan", "default").eval()
    lr = faces["lr_genuine"][:4]
    with torch.no_grad():
        clamped = m.super_resolve(lr)
        m.config = dataclasses.replace(m.config, legacy_minmax_output=True)
        stretched = m.super_resolve(lr)
    assert not torch.allclose(clamped, stretched)
    assert torch.allclose(stretched.amin(dim=(1, 2, 3)), torch.zeros(4), atol=1e-6)
    assert torch.allclose(stretched.amax(dim=(1, 2, 3)), torch.ones(4), atol=1e-6)
