"""The model zoo on its shipped weights and the sample's real faces: hash and pickle safety, the
``lrfb zoo`` commands, ``lrfb sr NAME``, ``lrfb train --init zoo``, the benchmark's zoo rows, and
the issue's acceptance check (every zoo SR model's outputs are faces)."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_benchmark import _dataset

from lrfacebench import io, zoo
from lrfacebench.baselines.cyclegan import CycleGAN
from lrfacebench.baselines.vdsr import VDSR
from lrfacebench.bench.config import BenchConfig
from lrfacebench.bench.harness import Benchmark
from lrfacebench.cli import main
from lrfacebench.data.faces import list_sample, load_faces
from lrfacebench.errors import RunError, TrainError
from lrfacebench.pixels import to_unit_float
from lrfacebench.sr import to_lr16
from lrfacebench.training.loop import train
from lrfacebench.weights import WeightError
from lrfacebench.zoo import checks
from lrfacebench.zoo.card import render

SR_MODELS = sorted(n for n, e in zoo.entries().items() if e.kind == "sr")


@pytest.fixture(scope="module")
def genuine_test() -> torch.Tensor:
    """The sample's genuine-LR test crops, ``(87,3,16,16)`` float in [0,1]."""
    return to_unit_float(load_faces(list_sample("lr", ("test",))).images)


@pytest.fixture()
def zoo_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of the shipped zoo's VDSR entry, which ``lrfacebench.zoo`` then reads."""
    root = tmp_path / "zoo"
    root.mkdir()
    for p in zoo.MODELS_DIR.glob("vdsr.*"):
        shutil.copy(p, root / p.name)
    monkeypatch.setattr(zoo, "MODELS_DIR", root)
    return root


def test_the_zoo_ships_vdsr_and_the_recogniser_with_cards():
    found = zoo.entries()
    assert {"vdsr", "centreface-independent"} <= set(found), "scripts/build_zoo.py --only vdsr builds both"
    for name, e in found.items():
        assert e.path.suffix == ".safetensors" and e.path.is_file(), name
        assert e.card["licences"] and e.card["training"]["seconds"] > 0 and e.card["config_hash"]
        assert zoo.card_path(name).with_suffix(".md").read_text() == render(e.card)


@pytest.mark.parametrize("name", SR_MODELS)
def test_every_zoo_sr_model_turns_genuine_lr_faces_into_faces(name, genuine_test):
    """The issue's acceptance check: per-image Y-SSIM to bicubic of the same input, median >= 0.5
    on the 87 genuine test faces (smoke-trained blobs score near 0)."""
    ssim = checks.bicubic_ssim(zoo.load(name), genuine_test)
    assert len(ssim) == 87
    assert np.median(ssim) >= checks.SSIM_THRESHOLD, f"{name}: median SSIM to bicubic {np.median(ssim):.3f}"
    assert abs(np.median(ssim) - zoo.entry(name).card["bicubic_ssim"]["median"]) < 1e-3  # its card says so


def test_the_face_check_fails_an_untrained_generator(genuine_test):
    """What the acceptance check guards against: a generator that was not trained paints no face
    (an untrained CycleGAN scores about 0.07; smoke-trained blobs score about as low)."""
    torch.manual_seed(0)
    untrained = CycleGAN(CycleGAN.make_config("smoke"), "cpu").eval()
    assert np.median(checks.bicubic_ssim(untrained, genuine_test[:16])) < checks.SSIM_THRESHOLD


def test_a_tampered_zoo_file_fails_with_a_hash_error(zoo_copy, tmp_path, sample_dir):
    weights = zoo_copy / "vdsr.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightError, match=r"zoo:vdsr .*has sha256 .*expected .*corrupt or altered"):
        zoo.load("vdsr")
    res = CliRunner().invoke(main, ["zoo", "verify"])
    assert res.exit_code == 1 and "FAIL" in res.output and "1 of 1 zoo model(s) failed" in res.output
    face = sorted((sample_dir / "genuine_lr").glob("*.png"))[0]
    res = CliRunner().invoke(main, ["sr", "vdsr", str(face), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and res.output.startswith("Error: zoo:vdsr") and "sha256" in res.output
    assert not (tmp_path / "out").exists()


class _Payload:
    """Unpickling this writes a marker file: the code a pickle-bearing weights file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_bearing_zoo_file_is_refused_even_with_its_hash_in_the_card(zoo_copy, tmp_path, writer):
    marker = tmp_path / "unpickled.marker"
    weights = zoo_copy / "vdsr.safetensors"
    payload = {"method": "vdsr", "nets": {}, "x": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, weights)
    else:
        weights.write_bytes(pickle.dumps(payload))
    card = json.loads((zoo_copy / "vdsr.json").read_text())
    (zoo_copy / "vdsr.json").write_text(json.dumps({**card, "sha256": io.sha256_file(weights)}))
    with pytest.raises(RunError, match="not a safetensors file: refused"):
        zoo.load("vdsr")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is live: unpickling it writes the marker
    assert marker.exists()


def test_zoo_list_show_and_verify():
    runner = CliRunner()
    res = runner.invoke(main, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    for name, e in zoo.entries().items():
        assert any(line.startswith(name + " ") and e.sha256[:12] in line for line in res.output.splitlines()), name
    res = runner.invoke(main, ["zoo", "show", "vdsr"])
    assert res.exit_code == 0 and res.output.startswith("# Model card: `vdsr`")
    assert zoo.entry("vdsr").sha256 in res.output and "bicubic" in res.output and "MIT" in res.output
    res = runner.invoke(main, ["zoo", "show", "no-such-model"])
    assert res.exit_code == 1 and "no zoo model named 'no-such-model'" in res.output
    res = runner.invoke(main, ["zoo", "verify"])
    assert res.exit_code == 0 and f"all {len(zoo.entries())} zoo model(s) verified" in res.output


def test_sr_with_a_zoo_name_writes_the_zoo_models_64x64_faces(tmp_path, sample_dir):
    faces = sorted((sample_dir / "genuine_lr").glob("*.png"))[:3]
    (tmp_path / "in").mkdir()
    for p in faces:
        shutil.copy(p, tmp_path / "in" / p.name)
    res = CliRunner().invoke(main, ["sr", "vdsr", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    method = zoo.load("vdsr")
    for p in faces:
        out = io.read_rgb(tmp_path / "out" / p.name)
        assert out.shape == (64, 64, 3)
        with torch.no_grad():
            expected = method.super_resolve(to_lr16(io.read_rgb(p))[None])[0]
        assert np.array_equal(out, (expected.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def test_train_init_zoo_starts_from_the_zoo_weights(tmp_path, monkeypatch, genuine_test):
    """The first step's outputs are the zoo model's; without --init they are not."""
    x = genuine_test[:4]
    seen: dict[str, torch.Tensor] = {}
    original = VDSR.train_step

    def spy(self, stage, batch, step):
        if step == 0:
            with torch.no_grad():
                seen["first"] = self.eval().super_resolve(x)
        return original(self, stage, batch, step)

    monkeypatch.setattr(VDSR, "train_step", spy)
    with torch.no_grad():
        expected = zoo.load("vdsr").super_resolve(x)
    run = train("vdsr", "cpu", out=tmp_path / "ft", device="cpu", init="zoo", overrides=["iterations=1"])
    assert torch.equal(seen["first"], expected)
    assert io.read_json(run / "config.json")["init"] == {"zoo": "vdsr", "sha256": zoo.entry("vdsr").sha256}
    train("vdsr", "cpu", out=tmp_path / "scratch", device="cpu", overrides=["iterations=1"])
    assert not torch.allclose(seen["first"], expected, atol=1e-3)
    with pytest.raises(TrainError, match="does not fit this config"):  # smoke builds a 6-layer VDSR
        train("vdsr", "smoke", out=tmp_path / "smoke", device="cpu", init="zoo")


def test_benchmark_rows_name_their_weights_and_a_model_without_zoo_weights_says_so(zoo_copy, tmp_path):
    """Zoo weights by default: vdsr's rows carry zoo:vdsr and its sha256; srgan, missing from this
    zoo, is trained with the smoke preset and its rows say so."""
    out = tmp_path / "res"
    hr = load_faces(list_sample("hr", ("test",)))
    hr.images, hr.names = hr.images[:8], hr.names[:8]
    cfg = BenchConfig(tables=("table3",), methods=("vdsr", "srgan", "bicubic"), out=str(out), device="cpu",
                      data={"helen": str(_dataset(tmp_path / "helen", hr, "test", hr=True))}, bootstrap=100)
    rows = [r for r in Benchmark(cfg).run() if r.source == "reproduced"]
    by = {r.method: r for r in rows if r.metric == "psnr_y"}
    assert by["vdsr"].run_id == "zoo:vdsr" and by["vdsr"].checkpoint_sha256 == zoo.entry("vdsr").sha256
    assert by["srgan"].run_id == "srgan-default-smoke-s0 (no zoo weights: trained with the smoke preset)"
    assert by["bicubic"].run_id == "bicubic (untrained)"
    md = (out / "LEADERBOARD.md").read_text()
    assert "## Weights" in md and f"`{zoo.entry('vdsr').sha256[:16]}…`" in md
    assert not (out / "runs" / "vdsr-default-smoke-s0").exists()  # nothing trained for vdsr


def test_benchmark_presets_that_train_need_train(tmp_path):
    res = CliRunner().invoke(main, ["benchmark", "--preset", "cpu", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "add --train" in res.output
    res = CliRunner().invoke(main, ["benchmark", "--seeds", "0,1", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "add --train" in res.output


def test_evaluate_identity_takes_the_zoo_recogniser(tmp_path):
    """`--recognizer centreface-independent` is the zoo's: a face against itself scores 1, and
    swapping two faces lowers exactly those two cosines."""
    hr, sr = tmp_path / "hr", tmp_path / "sr"
    hr.mkdir()
    for p in list_sample("hr", ("test",)).paths[:4]:
        shutil.copy(p, hr / p.name)
    shutil.copytree(hr, sr)
    a, b = sorted(sr.iterdir())[:2]
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    res = CliRunner().invoke(main, ["evaluate", "identity", str(sr), str(hr), "--recognizer", "centreface-independent",
                                    "--device", "cpu", "--json", str(tmp_path / "id.json")])
    assert res.exit_code == 0, res.output
    (result,) = io.read_json(tmp_path / "id.json")["results"]
    cos = sorted(result["per_face"].values())
    assert cos[1] < 0.9999 and all(abs(c - 1) < 1e-5 for c in cos[2:])
