"""FSRNet / FSRGAN behind the Method interface, and the MTCNN landmarks its prior loss learns from,
on the sample's real HR faces.

The paper-width networks are only constructed (parameter counts); training uses the ``smoke`` preset.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from test_baselines import _build, _nets_with_grad, _record_steps, _sr_three_sample_faces
from test_faces import make_built_set

from lrfacebench.data.faces import FaceSet, list_sample, load_faces
from lrfacebench.data.landmarks import detect_landmarks, mirror_landmarks, with_landmarks
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.errors import DatasetError
from lrfacebench.io import write_png
from lrfacebench.methods import Batch, Stage
from lrfacebench.nn.fsrnet import Hourglass, landmark_heatmaps
from lrfacebench.training.feeder import Feeder
from lrfacebench.training.loop import train

GENERATOR = {"coarse", "encoder", "prior", "decoder"}


@pytest.fixture(scope="module")
def hr_set() -> FaceSet:
    """The sample's 62 held-out HR faces (64x64 uint8) with their MTCNN landmarks."""
    return with_landmarks(load_faces(list_sample("hr", ("test",))))


def _batch(faces: FaceSet, n: int = 8) -> Batch:
    """The first ``n`` faces that have landmarks: HR, quantised DS(HR) and landmarks."""
    keep = torch.nonzero(torch.isfinite(faces.landmarks).flatten(1).all(1)).flatten()[:n]
    hr = faces.images[keep].float() / 255
    return Batch(hr=hr, lr_artificial=to_uint8(downsample(hr)).float() / 255, landmarks=faces.landmarks[keep])


# ----- architecture ----------------------------------------------------------------------------
def test_paper_parameter_counts() -> None:
    m = _build("fsrnet", "default", "paper")
    counts = m.parameter_counts()
    assert {k: counts[k] for k in GENERATOR} == {"coarse": 225_987, "encoder": 928_320, "prior": 1_614_341,
                                                 "decoder": 400_579}
    assert counts["deployed"] == counts["trained"] == 3_169_227
    blocks = sum(type(b).__name__ == "BasicResidualBlock" for b in m.nets["encoder"].modules())
    hourglasses = [h for h in m.nets["prior"].body if isinstance(h, Hourglass)]
    assert blocks == 12 and len(hourglasses) == 2
    gan = _build("fsrnet", "fsrgan", "paper").parameter_counts()
    assert gan["d"] == 13_081_473 and gan["deployed"] == counts["deployed"]  # conditional D: 6 input channels
    none = _build("fsrnet", "default", "paper", prior_loss="none").parameter_counts()
    assert counts["prior"] - none["prior"] == 128 * 5 + 5  # only the heatmap head goes


# ----- landmarks and heatmaps ------------------------------------------------------------------
def test_heatmaps_of_real_landmarks_peak_at_the_landmarks(hr_set) -> None:
    pts = hr_set.landmarks
    found = torch.isfinite(pts).flatten(1).all(1)
    assert found.sum() >= 0.9 * len(hr_set)
    pts = pts[found]
    # MTCNN's order on upright faces: left eye, right eye, nose, left and right mouth corner
    assert (pts[:, 0, 0] < pts[:, 1, 0]).all() and (pts[:, 3, 0] < pts[:, 4, 0]).all()
    assert (pts[:, :2, 1].amax(1) < pts[:, 2, 1]).all() and (pts[:, 2, 1] < pts[:, 3:, 1].amin(1)).all()
    for size in (64, 32):  # HR resolution and the prior network's
        maps = landmark_heatmaps(pts, size, 64, sigma=1.0)
        assert maps.shape == (len(pts), 5, size, size) and maps.min() >= 0 and maps.max() <= 1
        peak = maps.flatten(2).argmax(2)
        want = (pts * size / 64).floor().long().clamp(0, size - 1)
        assert torch.equal(peak % size, want[..., 0]) and torch.equal(peak // size, want[..., 1])
        inside = ((pts >= 0) & (pts < 64)).all(2)  # a landmark may lie just outside the crop
        assert inside.float().mean() > 0.95
        # at most half a map pixel from the peak's centre on each axis: exp(-0.25) at sigma 1
        assert (maps.flatten(2).amax(2)[inside] >= np.exp(-0.25) - 1e-6).all()


def test_mirrored_landmarks_match_mtcnn_on_mirrored_faces(hr_set) -> None:
    flip = torch.ones(len(hr_set), dtype=torch.bool)
    mirrored = mirror_landmarks(hr_set.landmarks, flip, 64)
    on_flipped = detect_landmarks(hr_set.images.flip(3))
    both = torch.isfinite(mirrored).flatten(1).all(1) & torch.isfinite(on_flipped).flatten(1).all(1)
    assert both.sum() >= 0.9 * len(hr_set)
    err = mirrored[both] - on_flipped[both]  # HR pixels; MTCNN itself is not exactly mirror-symmetric
    assert err.abs().mean() < 1.0  # (measured 0.69; left and right unswapped: ~20)
    assert err[..., 0].mean().abs() < 0.4  # x -> 64 - x (measured -0.14; 63 - x would give ~1)


def test_feeder_mirrors_landmarks_with_their_face(hr_set) -> None:
    one = FaceSet("hr", hr_set.images[:1], hr_set.identity[:1], (), ["f"], landmarks=hr_set.landmarks[:1])
    feeder = Feeder(one, None, "cpu", hflip=True)
    stage = Stage("train", 10, ("hr", "lr_artificial", "landmarks"), batch_size=4)
    face, pts = one.images.float() / 255, one.landmarks
    seen = set()
    for step in range(10):
        b = feeder.batch(stage, 0, step)
        for hr, lm in zip(b.hr, b.landmarks):
            flipped = torch.equal(hr, face[0].flip(2))
            assert flipped or torch.equal(hr, face[0])
            assert torch.allclose(lm, mirror_landmarks(pts, torch.tensor([flipped]), 64)[0])
            seen.add(flipped)
    assert seen == {True, False}


def test_landmarks_requested_on_faces_without_any_fail_clearly(tmp_path) -> None:
    hr = make_built_set(tmp_path / "blank", paired=True, n=6)
    for p in (hr / "hr64").glob("*.png"):  # no face for MTCNN to find
        write_png(p, np.full((64, 64, 3), 127, np.uint8))
    with pytest.raises(DatasetError, match="prior_loss=none"):
        train("fsrnet", "smoke", hr=hr, lr=hr, split=("all",), out=tmp_path / "r", device="cpu")
    run = train("fsrnet", "smoke", hr=hr, lr=hr, split=("all",), out=tmp_path / "r2", device="cpu",
                overrides=["prior_loss=none", "iterations=2"])
    assert (run / "final.pt").is_file()


# ----- gradient routing ------------------------------------------------------------------------
@pytest.mark.parametrize("variant,steps", [("default", [("g", GENERATOR)]),
                                           ("fsrgan", [("g", GENERATOR), ("d", {"d"})])])
def test_routing_per_optimiser_step(hr_set, variant, steps) -> None:
    m = _build("fsrnet", variant)
    log = _record_steps(m)
    out = m.train_step("train", _batch(hr_set), 0)
    assert log == steps
    assert {"mse_coarse", "mse_fine", "prior", "total"} <= set(out) and ("adv" in out) == (variant == "fsrgan")
    # the prior loss trains the coarse net and the prior network only
    m.zero_grad()
    m.generator_losses(_batch(hr_set))["prior"].backward()
    assert _nets_with_grad(m) == {"coarse", "prior"}


def test_prior_loss_none_needs_no_landmarks(hr_set) -> None:
    m = _build("fsrnet", "default", prior_loss="none")
    assert m.stages()[0].needs == ("hr", "lr_artificial")
    b = _batch(hr_set)
    b.landmarks = None
    log = _record_steps(m)
    out = m.train_step("train", b, 0)
    assert "prior" not in out and log == [("g", GENERATOR)]  # the prior net still feeds the decoder
    with pytest.raises(ValueError, match="prior_loss"):
        _build("fsrnet", "default", prior_loss="parsing")


# ----- smoke training through the trainer, then lrfb sr ------------------------------------------
@pytest.mark.parametrize("variant", ["default", "fsrgan"])
def test_smoke_run_trains_saves_and_super_resolves(tmp_path, sample_dir, variant) -> None:
    run = train("fsrnet", "smoke", variant=variant, out=tmp_path / "run", device="cpu",
                overrides=["engine.log_every=1"])
    rows = list(csv.DictReader(open(run / "metrics.csv")))  # long format: one row per step and term
    fine = [float(r["value"]) for r in rows if r["name"] == "mse_fine"]
    prior = [float(r["value"]) for r in rows if r["name"] == "prior"]
    assert len(fine) == len(prior) == 12 and np.mean(fine[-3:]) < np.mean(fine[:3])
    assert all(v > 0 for v in prior)
    assert (run / "final.pt").is_file() and (run / "parameters.json").is_file()
    outs = _sr_three_sample_faces(run, sample_dir, tmp_path)
    assert np.std(outs[0]) > 0
