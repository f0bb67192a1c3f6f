"""CSRI behind the Method interface, on the sample's real faces: parameter counts, gradient routing of
every loss and optimiser step, the ``lr_identity`` stream (labelled genuine LR only; a clear error
without labels), and ``lrfb train csri`` + ``lrfb sr`` end to end (``smoke`` preset).

The identity-labelled LR set is a small TinyFace tree in the official layout built from the sample's
real faces by tests/test_identity_sources.py's helpers, then ``lrfb build-dataset tinyface``: five
labelled people (two in Training_Set, three in the test protocol) and three unlabelled distractors.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_baselines import _build, _nets_with_grad, _record_steps, _sr_three_sample_faces, faces  # noqa: F401 (fixture)
from test_identity_sources import build, make_tinyface, people, strangers  # noqa: F401 (fixtures)

from lrfacebench.cli.train import train_command
from lrfacebench.data.faces import list_dataset, list_sample, load_faces
from lrfacebench.degrade import to_uint8
from lrfacebench.errors import DatasetError
from lrfacebench.io import load_checkpoint, read_json
from lrfacebench.methods import Batch, Stage
from lrfacebench.methods.base import LR_IDENTITY
from lrfacebench.nn.centreface import CentreFace
from lrfacebench.training.feeder import Feeder
from lrfacebench.training.loop import train

N_IDS, N_LR_IDS = 24, 5  # the sample's HR identities; the TinyFace tree's people


@pytest.fixture(scope="module")
def tinyface(tmp_path_factory, people, strangers) -> Path:  # noqa: F811
    """A built identity-labelled genuine-LR set (``lrfb build-dataset tinyface``)."""
    root = tmp_path_factory.mktemp("tinyface")
    make_tinyface(root / "data", people, strangers)
    build("tinyface", root / "data", root / "built")
    return root / "built"


def _csri(variant: str = "default", preset: str = "smoke", **over):
    return _build("csri", variant, preset, **{"n_identities": N_IDS, "n_lr_identities": N_LR_IDS, **over})


def _labelled(faces, n: int = 8) -> Batch:  # noqa: F811
    """Real HR faces, their DS and genuine LR faces, with identities of either set."""
    idx = torch.arange(n)
    return Batch(hr=faces["hr"][idx], lr_artificial=faces["lr_artificial"][idx], identity=idx % N_IDS,
                 lr_genuine=faces["lr_genuine"][idx.flip(0)], lr_identity=idx % N_LR_IDS)


def _grads_reach(method, loss: torch.Tensor) -> set[str]:
    method.zero_grad()
    loss.backward(retain_graph=True)
    return _nets_with_grad(method)


# ----- architecture ---------------------------------------------------------------------------
def test_parameter_counts_and_stages() -> None:
    counts = _csri(preset="paper", n_lr_identities=2570).parameter_counts()  # TinyFace's training ids
    assert counts == {"phi_sr": 1_549_462, "phi_fr": 3_338_456, "lr_head": 512 * 2570 + 2570,
                      "deployed": 1_549_462, "trained": 6_206_328}
    assert counts["phi_fr"] == sum(p.numel() for p in CentreFace(N_IDS, 512).parameters())  # CR's phi_fr
    synthetic = _csri("synthetic", preset="paper").parameter_counts()
    assert "lr_head" not in synthetic and synthetic["deployed"] == 1_549_462
    m = _csri()
    assert [(s.name, s.needs) for s in m.stages()] == [
        ("pretrain_sr", ("hr", "lr_artificial")), ("pretrain_fr", ("hr", "identity")),
        ("csri", ("hr", "lr_artificial", "identity", "lr_genuine", LR_IDENTITY))]
    assert _csri("synthetic").stages()[-1].needs == ("hr", "lr_artificial", "identity")
    assert "lr_head" not in _csri(n_lr_identities=0).nets  # inference or a dry run on unlabelled LR


def test_super_resolve_is_the_sr_net_alone(faces) -> None:  # noqa: F811
    m = _csri().eval()
    lr = faces["lr_genuine"][:6]
    with torch.no_grad():
        sr = m.super_resolve(lr)
        direct = (m.nets["phi_sr"](lr * 2 - 1) + 1) / 2
    assert sr.shape == (6, 3, 64, 64) and 0 <= sr.min() and sr.max() <= 1 and sr.std() > 0
    assert torch.allclose(sr, direct.clamp(0, 1))


# ----- gradient routing -----------------------------------------------------------------------
def test_routing_per_optimiser_step(faces) -> None:  # noqa: F811
    m = _csri()
    batch = _labelled(faces)
    log = _record_steps(m)
    m.train_step("pretrain_sr", batch, 0)
    m.train_step("pretrain_fr", batch, 0)
    assert log == [("phi_sr", {"phi_sr"}), ("phi_fr", {"phi_fr"})]
    log.clear()
    out = m.train_step("csri", batch, 0)
    every = {"phi_sr", "phi_fr", "lr_head"}  # one backward of the total, then both optimisers
    assert log == [("phi_sr", every), ("phi_fr", every)]
    c = m.config
    assert out["total"] == pytest.approx(out["pixel"] + c.identity_weight * (out["id_hr"] + c.genuine_weight
                                                                             * out["id_lr"]), rel=1e-5)
    # each term on its own: the genuine branch has no pixel loss, and each set has its own head
    terms = m.losses(batch)
    assert _grads_reach(m, terms["pixel"]) == {"phi_sr"}
    assert _grads_reach(m, terms["id_hr"]) == {"phi_sr", "phi_fr"}
    assert m.nets["phi_fr"].classifier.weight.grad.abs().sum() > 0  # the HR head
    assert _grads_reach(m, terms["id_lr"]) == every
    assert m.nets["phi_fr"].classifier.weight.grad is None  # not the HR head


def test_synthetic_variant_needs_no_genuine_faces(faces) -> None:  # noqa: F811
    m = _csri("synthetic")
    batch = _labelled(faces)
    batch.lr_genuine = batch.lr_identity = None
    log = _record_steps(m)
    out = m.train_step("csri", batch, 0)
    assert set(out) == {"pixel", "id_hr", "total"} and log == [("phi_sr", {"phi_sr", "phi_fr"}),
                                                               ("phi_fr", {"phi_sr", "phi_fr"})]


def test_labels_outside_a_head_are_refused(faces) -> None:  # noqa: F811
    batch = _labelled(faces)
    batch.lr_identity = batch.lr_identity + N_LR_IDS
    with pytest.raises(ValueError, match=r"lr identities must lie in \[0, n_lr_identities=5\)"):
        _csri().train_step("csri", batch, 0)


# ----- the lr_identity stream ---------------------------------------------------------------------
def test_lr_identity_stream_draws_only_labelled_genuine_faces(tinyface) -> None:
    lr_set = load_faces(list_dataset(tinyface, "lr", ("all",)))  # train, gallery, probe + distractors
    labelled = int((lr_set.identity >= 0).sum())
    assert (labelled, len(lr_set), lr_set.n_identities) == (15, 18, N_LR_IDS)
    feeder = Feeder(load_faces(list_sample("hr")), lr_set, "cpu", seed=2, hflip=True)
    assert LR_IDENTITY in feeder.provides()
    stage = Stage("csri", 10, needs=("hr", "identity", "lr_genuine", LR_IDENTITY), batch_size=8)
    lookup = {lr_set.images[i].numpy().tobytes(): i for i in range(len(lr_set))}
    seen = set()
    for step in range(2 * labelled // 8 + 1):  # two epochs of the labelled faces
        b = feeder.batch(stage, 0, step)
        assert b.identity.min() >= 0 and b.lr_identity.min() >= 0
        for face, ident in zip(b.lr_genuine, b.lr_identity):  # mirrored or not, the face's own identity
            u8 = to_uint8(face)
            i = lookup.get(u8.numpy().tobytes(), lookup.get(u8.flip(2).numpy().tobytes()))
            assert int(lr_set.identity[i]) == int(ident)
            seen.add(i)
    assert seen == set(torch.nonzero(lr_set.identity >= 0).flatten().tolist())  # no distractor
    ids_only = feeder.batch(Stage("x", 1, needs=(LR_IDENTITY,), batch_size=4), 0, 0)
    assert ids_only.lr_genuine is None and ids_only.lr_identity.shape == (4,)
    unlabelled = Feeder(None, load_faces(list_sample("lr")), "cpu")  # the sample's genuine LR
    assert LR_IDENTITY not in unlabelled.provides()
    with pytest.raises(DatasetError, match="needs identity labels of genuine LR faces.*tinyface"):
        unlabelled.batch(Stage("x", 1, needs=("lr_genuine", LR_IDENTITY), batch_size=2), 0, 0)


def test_training_on_unlabelled_genuine_lr_fails_clearly(tmp_path) -> None:
    with pytest.raises(DatasetError, match="sample: stage 'csri' needs identity labels.*tinyface") as e:
        train("csri", "smoke", out=tmp_path / "run", device="cpu")  # the sample: no LR identities
    assert e.value.param == "lr"
    run = train("csri", "smoke", variant="synthetic", out=tmp_path / "synthetic", device="cpu")
    assert list(load_checkpoint(run / "final.pt")["nets"]) == ["phi_sr"]


# ----- lrfb train + lrfb sr ---------------------------------------------------------------------
def test_smoke_train_run_and_lrfb_sr(tmp_path, sample_dir, tinyface) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(train_command, ["csri", "--preset", "smoke", "--hr", "@sample", "--lr", str(tinyface),
                                        "--out", str(run), "-o", "engine.log_every=1"])
    assert res.exit_code == 0, res.output
    config = read_json(run / "config.json")["config"]
    assert (config["n_identities"], config["n_lr_identities"]) == (N_IDS, 2)  # tinyface train: 2 people
    params = read_json(run / "parameters.json")
    assert params["deployed"] == params["phi_sr"] and "lr_head" in params
    assert list(load_checkpoint(run / "final.pt")["nets"]) == ["phi_sr"]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = {(r["stage"], r["name"]) for r in rows}
    assert {("pretrain_sr", "pixel"), ("pretrain_fr", "id_hr"), ("csri", "pixel"), ("csri", "id_hr"),
            ("csri", "id_lr"), ("csri", "total")} <= names

    _sr_three_sample_faces(run, sample_dir, tmp_path)
