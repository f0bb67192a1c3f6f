"""``lrfb sr`` on the sample's real faces: with ``bicubic`` (no weights) and with a trained test run."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_train import TINY, TinySR

from lrfacebench.cli.sr import sr_command
from lrfacebench.degrade import imresize, to_uint8, upsample
from lrfacebench.io import read_rgb
from lrfacebench.runs import load_method
from lrfacebench.training.loop import train


@pytest.fixture()
def inputs(tmp_path, sample_dir) -> Path:
    """A folder tree of real crops of several sizes (genuine LR 11-23 px, one 128 px HR face),
    plus an unreadable file and a non-image."""
    root = tmp_path / "in"
    lr = sorted((sample_dir / "genuine_lr").glob("*.png"))
    (root / "cam1").mkdir(parents=True)
    for p in lr[:3]:
        shutil.copy(p, root / "cam1" / p.name)
    for p in lr[3:5]:
        shutil.copy(p, root / p.name)
    shutil.copy(sorted((sample_dir / "hr").glob("*.jpg"))[0], root / "big_face.jpg")
    (root / "cam1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "notes.txt").write_text("not an image")
    return root


def _expected_bicubic(path: Path) -> np.ndarray:
    x = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)[None].float() / 255
    lr16 = to_uint8(imresize(x, (16, 16))).float() / 255
    return to_uint8(upsample(lr16).clamp(0, 1))[0].permute(1, 2, 0).numpy()


def test_bicubic_keeps_names_and_structure_and_skips_unreadable(inputs, tmp_path, sample_dir):
    out = tmp_path / "out"
    single = sorted((sample_dir / "genuine_lr").glob("*.png"))[10]
    res = CliRunner().invoke(sr_command, ["bicubic", str(inputs), str(single), "--out", str(out), "--batch", "4",
                                          "--device", "cpu"])
    assert res.exit_code == 0, res.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    names = sorted([f"cam1/{p.name}" for p in (inputs / "cam1").glob("dsfd*.png")] +
                   [p.name for p in inputs.glob("*.png")] + ["big_face.png", single.name])
    assert written == names
    assert "skipped" in res.output and "broken.png" in res.output and "cannot decode" in res.output
    assert "wrote 7 image(s)" in res.output and "skipped 1" in res.output
    for rel in written:
        img = read_rgb(out / rel)
        assert img.shape == (64, 64, 3)
    src = {"big_face.png": inputs / "big_face.jpg", single.name: single,
           **{f"cam1/{p.name}": p for p in (inputs / "cam1").glob("dsfd*.png")}}
    for rel, path in src.items():  # any crop size: resized to 16x16 first, then bicubic x4
        assert np.array_equal(read_rgb(out / rel), _expected_bicubic(path)), rel


def test_trained_run_in_batches_matches_the_loaded_method(inputs, tmp_path, monkeypatch):
    run = train(TINY, "smoke", out=tmp_path / "run", device="cpu", overrides=["pretrain_iterations=3",
                                                                               "finetune_iterations=3"])
    calls: list[tuple[int, bool]] = []
    original = TinySR.super_resolve

    def spy(self, lr, artificial=False):
        calls.append((lr.shape[0], artificial))
        return original(self, lr, artificial)

    monkeypatch.setattr(TinySR, "super_resolve", spy)
    out = tmp_path / "out"
    res = CliRunner().invoke(sr_command, [str(run), str(inputs / "cam1"), "--out", str(out), "--batch", "2",
                                          "--artificial"])
    assert res.exit_code == 0, res.output
    assert calls == [(2, True), (1, True)]  # 3 readable faces in batches of 2, artificial path asked
    method = load_method(run / "final.pt")
    for p in sorted((inputs / "cam1").glob("dsfd*.png")):
        x = torch.from_numpy(read_rgb(p)).permute(2, 0, 1)[None].float() / 255
        want = to_uint8(original(method, to_uint8(imresize(x, (16, 16))).float() / 255))[0].permute(1, 2, 0)
        # batch size changes the conv kernels' summation order on some CPUs (AVX2 without AVX-512):
        # a float rounding step may cross a uint8 boundary, so allow one grey level, rarely
        diff = np.abs(read_rgb(out / p.with_suffix(".png").name).astype(int) - want.numpy().astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (p.name, diff.max(), (diff > 0).mean())


def test_bad_weights_and_empty_inputs_are_clear_errors(tmp_path, inputs):
    runner = CliRunner()
    res = runner.invoke(sr_command, [str(tmp_path / "nope"), str(inputs), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no such run directory, weights file or registered method name" in res.output
    res = runner.invoke(sr_command, [TINY, str(inputs), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "needs trained weights" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(sr_command, ["bicubic", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "folder holds no images" in res.output and "no image could be" in res.output
