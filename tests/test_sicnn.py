"""SICNN behind the Method interface, on the sample's real faces: parameter counts, the super-identity
loss, gradient routing of every loss (the recogniser stays frozen), a recogniser taken from another
run, and ``lrfb train sicnn`` + ``lrfb sr`` end to end (``smoke`` preset)."""
from __future__ import annotations

import hashlib

import pytest
import torch
from click.testing import CliRunner
from test_baselines import _batch, _build, _nets_with_grad, _record_steps, _sr_three_sample_faces, faces  # noqa: F401 (fixture)

from lrfacebench.baselines.sicnn import HallucinationNet, super_identity
from lrfacebench.cli.train import train_command
from lrfacebench.io import load_checkpoint, read_json
from lrfacebench.nn.centreface import CentreFace
from lrfacebench.runs import split_net_spec

N_IDS = 24  # the sample's HR identities


def _sicnn(variant: str = "default", preset: str = "smoke", **over):
    return _build("sicnn", variant, preset, **{"n_identities": N_IDS, **over})


def _labelled(faces, n: int = 8):
    batch = _batch(faces, torch.arange(n))
    batch.identity = torch.arange(n) % N_IDS
    return batch


def _state_hash(net: torch.nn.Module) -> str:
    """sha256 of every tensor of ``net``'s state dict: weights and batch-norm statistics."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _grads_reach(method, loss: torch.Tensor) -> set[str]:
    method.zero_grad()
    loss.backward(retain_graph=True)
    return _nets_with_grad(method)


# ----- architecture -----------------------------------------------------------------------------
def test_parameter_counts_and_widths() -> None:
    m = _sicnn(preset="paper")
    counts = m.parameter_counts()
    assert counts["cnn_h"] == counts["deployed"] == 3_080_515  # x4: two of the prototxt's 3 stages
    assert m.deployed == ("cnn_h",)
    assert sum(p.numel() for p in HallucinationNet(up_kernels=(3, 5, 5)).parameters()) == 5_116_227  # x8
    # the recogniser is CR's phi_fr network (CentreFace, 512-d fc5) for this run's identities
    assert counts["phi_fr"] == sum(p.numel() for p in CentreFace(N_IDS, 512).parameters())
    blocks = [b for b in m.nets["cnn_h"].modules() if type(b).__name__ == "DenseBlock"]
    assert [b.out_channels for b in blocks] == [256, 256, 128]  # 64 + 6 x 32, twice; 64 + 2 x 32
    with torch.no_grad():
        assert HallucinationNet(8, 4, 2, 1, (3, 5, 5))(torch.zeros(2, 3, 14, 12)).shape == (2, 3, 112, 96)


def test_stages_follow_the_recogniser_option() -> None:
    assert [s.name for s in _sicnn().stages()] == ["fr", "pretrain", "sicnn"]
    given = _sicnn(recognizer="runs/other")
    assert [s.name for s in given.stages()] == ["pretrain", "sicnn"]
    assert given.external_nets() == {"phi_fr": "runs/other"}
    assert _sicnn().external_nets() == {}
    assert _sicnn("domain_integrated").stages()[-1].needs == ("hr", "lr_artificial", "identity")
    assert split_net_spec("runs/a") == ("runs/a", "phi_fr")  # what recognizer=RUN[:NET] names
    assert split_net_spec("runs/a:phi_fr") == ("runs/a", "phi_fr")
    assert split_net_spec("C:\\runs\\a") == ("C:\\runs\\a", "phi_fr")


def test_super_resolve_real_faces(faces) -> None:  # noqa: F811
    m = _sicnn().eval()
    with torch.no_grad():
        sr = m.super_resolve(faces["lr_genuine"][:6])
    assert sr.shape == (6, 3, 64, 64) and 0 <= sr.min() and sr.max() <= 1 and sr.std() > 0


def test_super_identity_is_on_the_hypersphere() -> None:
    f = torch.randn(5, 32)
    assert super_identity(f, 3 * f).item() == pytest.approx(0, abs=1e-6)  # scale does not matter
    assert super_identity(f, -f).item() == pytest.approx(2.0)  # antipodes: 1/2 * ||2u||^2
    g = torch.randn(5, 32)
    want = 0.5 * (f / f.norm(dim=1, keepdim=True) - g / g.norm(dim=1, keepdim=True)).pow(2).sum(1).mean()
    assert super_identity(f, g).item() == pytest.approx(want.item(), rel=1e-5)


# ----- gradient routing -------------------------------------------------------------------------
def test_routing_default_recogniser_frozen(faces) -> None:  # noqa: F811
    m = _sicnn()
    batch = _labelled(faces)
    log = _record_steps(m)
    m.train_step("fr", batch, 0)
    m.train_step("pretrain", batch, 0)
    assert log == [("phi_fr", {"phi_fr", "centre_loss"}), ("centre_loss", {"phi_fr", "centre_loss"}),
                   ("cnn_h_pretrain", {"cnn_h"})]
    log.clear()
    modes: list[bool] = []
    m.nets["phi_fr"].stem.register_forward_pre_hook(lambda net, _: modes.append(net.training))  # embed()
    before = _state_hash(m.nets["phi_fr"])
    out = m.train_step("sicnn", batch, 0)
    assert log == [("cnn_h", {"cnn_h"})]  # the recogniser gets no gradient
    assert modes == [False, False] and not m.nets["phi_fr"].training  # eval: HR and SR features
    assert _state_hash(m.nets["phi_fr"]) == before  # weights and batch-norm statistics unchanged
    assert out["total"] == pytest.approx(out["pixel"] + m.config.si_weight * out["si"], rel=1e-5)
    # each loss term on its own
    losses = m.sr_losses(batch, identity=True)
    assert _grads_reach(m, losses["pixel"]) == {"cnn_h"}
    assert _grads_reach(m, losses["si"]) == {"cnn_h"}
    terms = m.fr_losses(batch.hr * 2 - 1, batch.identity)
    assert _grads_reach(m, terms["fr_softmax"]) == {"phi_fr"}
    assert _grads_reach(m, terms["fr_centre"]) == {"phi_fr", "centre_loss"}


def test_routing_domain_integrated(faces) -> None:  # noqa: F811
    """The paper's alternation: a recogniser step on HR + detached SR (CNN-H gets nothing), then
    the CNN-H step, during which the recogniser is frozen in eval mode."""
    m = _sicnn("domain_integrated")
    batch = _labelled(faces)
    at_cnn_h_step: list[tuple[bool, str]] = []
    log = _record_steps(m)
    cnn_h_step = m.optimizers["cnn_h"].step

    def spy(*a, **kw):
        at_cnn_h_step.append((m.nets["phi_fr"].training, _state_hash(m.nets["phi_fr"])))
        return cnn_h_step(*a, **kw)

    m.optimizers["cnn_h"].step = spy
    before = _state_hash(m.nets["phi_fr"])
    out = m.train_step("sicnn", batch, 0)
    assert log == [("phi_fr", {"phi_fr", "centre_loss"}), ("centre_loss", {"phi_fr", "centre_loss"}),
                   ("cnn_h", {"cnn_h"})]
    (training, at_step), = at_cnn_h_step
    after = _state_hash(m.nets["phi_fr"])
    assert after != before  # the recogniser step trained it ...
    assert not training and at_step == after  # ... and the CNN-H step left it as it was
    assert {"fr_softmax", "fr_centre", "pixel", "si", "total", "lr"} <= set(out)


# ----- training on the sample ---------------------------------------------------------------------
def test_pretraining_lowers_the_pixel_loss(faces) -> None:  # noqa: F811
    m = _sicnn(pretrain_iterations=30)
    every = _batch(faces, torch.arange(48))
    with torch.no_grad():
        before = m.sr_losses(every, identity=False)["pixel"].item()
    g = torch.Generator().manual_seed(0)
    for step in range(30):
        m.train_step("pretrain", _batch(faces, torch.randperm(48, generator=g)[:8]), step)
    with torch.no_grad():
        after = m.sr_losses(every, identity=False)["pixel"].item()
    assert after < 0.8 * before, (before, after)


def test_smoke_train_run_and_lrfb_sr(tmp_path, sample_dir) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(train_command, ["sicnn", "--preset", "smoke", "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert read_json(run / "parameters.json")["deployed"] == read_json(run / "parameters.json")["cnn_h"]
    assert list(load_checkpoint(run / "final.pt")["nets"]) == ["cnn_h"]
    names = {line.split(",")[2] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {"fr_softmax", "fr_centre", "pixel", "si", "total"} <= names

    _sr_three_sample_faces(run, sample_dir, tmp_path)

    # a second run takes its recogniser from the first (no fr stage) and keeps it frozen
    second = tmp_path / "second"
    res = runner.invoke(train_command, ["sicnn", "--preset", "smoke", "--out", str(second),
                                        "-o", f"recognizer={run}"])
    assert res.exit_code == 0, res.output
    ckpts = sorted((second / "checkpoints").glob("*_done.pt"))
    assert [p.name for p in ckpts] == ["00_pretrain_done.pt", "01_sicnn_done.pt"]  # no fr stage
    given = load_checkpoint(sorted((run / "checkpoints").glob("*_done.pt"))[-1])["state"]["nets"]["phi_fr"]
    kept = load_checkpoint(ckpts[-1])["state"]["nets"]["phi_fr"]
    assert all(torch.equal(v, kept[k]) for k, v in given.items())

    res = runner.invoke(train_command, ["sicnn", "--preset", "smoke", "--out", str(tmp_path / "bad"),
                                        "-o", f"recognizer={run}", "-o", "feat_dim=16"])
    assert res.exit_code != 0 and "phi_fr from" in res.output


def test_loads_cr_phi_fr_as_its_recogniser() -> None:
    """The paper-size recogniser is CR's phi_fr: CR's stage1_fr weights load into it, head included
    when the identities match, without it otherwise."""
    cr_fr = CentreFace(N_IDS, 512)  # the net CR builds as phi_fr
    torch.nn.init.normal_(cr_fr.fc5[1].weight)
    m = _sicnn(preset="paper")
    m.load_external("phi_fr", cr_fr.state_dict())
    assert _state_hash(m.nets["phi_fr"]) == _state_hash(cr_fr)
    other = _sicnn(preset="paper", n_identities=N_IDS + 3)
    head = other.nets["phi_fr"].classifier.weight.detach().clone()
    other.load_external("phi_fr", cr_fr.state_dict())
    assert torch.equal(other.nets["phi_fr"].fc5[1].weight, cr_fr.fc5[1].weight)
    assert torch.equal(other.nets["phi_fr"].classifier.weight, head)
