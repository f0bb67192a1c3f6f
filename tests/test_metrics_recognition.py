"""Rank-1/CMC protocol on the sample's real HR faces and their identity labels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrfacebench import degrade, io
from lrfacebench.cli import main
from lrfacebench.metrics import recognition as rec


@pytest.fixture(scope="module")
def faces(sample_dir):
    identities = rec.read_identities(sample_dir / "provenance.csv")
    images, labels, names = rec.read_labelled_faces(sample_dir / "hr", identities)
    return images, labels


def pixels(x: torch.Tensor) -> torch.Tensor:
    """A real but weak recogniser: the 16x16 DS of the face, mean-removed."""
    f = degrade.downsample(x, 4).flatten(1)
    return f - f.mean(1, keepdim=True)


def test_faces_and_identities_are_loaded(faces, sample_dir):
    images, labels = faces
    assert images.shape[1:] == (3, 64, 64) and 0 <= images.min() and images.max() <= 1
    assert len(labels) == len(images) > 150
    assert len(set(labels)) > 20


def test_perfect_embedder_scores_one(faces):
    images, labels = faces
    ids = {lab: i for i, lab in enumerate(sorted(set(labels)))}
    table = {}
    for img, lab in zip(images, labels):  # identity of a face looked up from its pixels
        table[img.numpy().tobytes()] = table[img.flip(-1).numpy().tobytes()] = ids[lab]

    def oracle(x):
        return torch.nn.functional.one_hot(torch.tensor([table[i.numpy().tobytes()] for i in x]),
                                           len(ids)).float()

    r = rec.rank1_cmc(oracle, images, labels)
    assert r.rank1_mean == 1.0 and r.rank1_std == 0.0 and set(r.cmc) == {1.0}


def test_protocol_counts_and_cmc(faces):
    images, labels = faces
    r = rec.rank1_cmc(pixels, images, labels)
    names, counts = np.unique(labels, return_counts=True)
    kept = counts[counts >= 2]
    assert r.n_identities == len(kept) and len(r.cmc) == len(kept)
    assert r.n_faces == kept.sum() and r.n_probes == kept.sum() - len(kept)
    assert r.n_excluded == len(labels) - kept.sum() > 0  # single-face identities are left out
    assert len(r.per_trial) == 10 and r.rank1_mean == pytest.approx(np.mean(r.per_trial))
    assert r.cmc[0] == pytest.approx(r.rank1_mean)
    assert np.all(np.diff(r.cmc) >= 0) and r.cmc[-1] == pytest.approx(1.0)
    chance = 1 / r.n_identities
    assert r.rank1_mean > 4 * chance  # raw pixels of the same person do match somewhat


def test_shuffled_labels_and_constant_embedder_score_chance(faces):
    images, labels = faces
    shuffled = list(np.random.default_rng(1).permutation(labels))
    r = rec.rank1_cmc(pixels, images, shuffled)
    chance = 1 / r.n_identities
    assert r.rank1_mean < 3 * chance
    # ties count against the probe: an embedder that cannot tell faces apart gets 0, not 100%
    const = rec.rank1_cmc(lambda x: torch.ones(len(x), 8), images, labels)
    assert const.rank1_mean == 0.0 and const.cmc[-1] == 1.0


def test_trials_are_seeded(faces):
    images, labels = faces
    feats = rec.flip_features(pixels, images)
    a = rec.rank1_from_features(feats, labels, trials=10, seed=0)
    b = rec.rank1_from_features(feats, labels, trials=10, seed=0)
    c = rec.rank1_from_features(feats, labels, trials=10, seed=1)
    assert a.per_trial == b.per_trial and a.cmc == b.cmc
    assert a.per_trial != c.per_trial
    assert a.rank1_std > 0  # gallery choice matters for a weak recogniser


def test_feature_is_flip_symmetric_and_normalised(faces):
    images, _ = faces

    def left_half(x):  # an asymmetric embedder: only the flip-sum makes the feature symmetric
        return x[..., :32].flatten(1)

    f = rec.flip_features(left_half, images[:16])
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0)
    assert np.allclose(f, rec.flip_features(left_half, images[:16].flip(-1)), atol=1e-6)


def test_identity_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\na.png,x\n")
    with pytest.raises(ValueError, match="needs an 'identity' column"):
        rec.read_identities(bad)
    clash = tmp_path / "clash.csv"
    clash.write_text("path,identity\nhr/a.png,x\nother/a.jpg,y\n")
    with pytest.raises(ValueError, match="two identities"):
        rec.read_identities(clash)
    with pytest.raises(ValueError, match="at least 2 identities"):
        rec.rank1_from_features(np.eye(3), ["a", "a", "b"])


def test_cli_rank1_with_a_runs_phi_fr(faces, sample_dir, tmp_path):
    """The CLI loads CR's CentreFace from a checkpoint (untrained here: the protocol, not the
    recogniser, is under test) and feeds it [-1,1] faces, as the direct computation does."""
    from lrfacebench import config
    from lrfacebench.methods import get_method

    cls = get_method("cr")
    method = cls(cls.make_config("smoke"), "cpu").eval()
    ckpt = tmp_path / "cr.pt"
    io.save_checkpoint(ckpt, {"method": "cr", "config": config.to_dict(method.config),
                              "nets": {k: v.state_dict() for k, v in method.nets.items()}})
    out = tmp_path / "rank1.json"
    res = CliRunner().invoke(main, ["evaluate", "rank1", str(sample_dir / "hr"), "--identities",
                                    str(sample_dir / "provenance.csv"), "--recognizer",
                                    f"{ckpt}:phi_fr", "--device", "cpu", "--json", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())["results"][0]
    images, labels = faces
    expected = rec.rank1_cmc(lambda x: method.nets["phi_fr"].embed(x * 2 - 1), images, labels)
    assert row["value"] == pytest.approx(expected.rank1_mean)
    assert row["cmc"] == pytest.approx(expected.cmc) and len(row["per_trial"]) == 10
    assert (row["metric"], row["n_identities"]) == ("rank1", expected.n_identities)
    assert row["higher_is_better"] is True
    assert "rank-1" in res.output and "CMC@1,5,10" in res.output
    res = CliRunner().invoke(main, ["evaluate", "rank1", str(sample_dir / "hr"), "--identities",
                                    str(sample_dir / "provenance.csv"), "--recognizer", f"{ckpt}:nope"])
    assert res.exit_code == 1 and "has no net 'nope'" in res.output
