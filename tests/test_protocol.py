"""The benchmark's small-data protocol on real sample faces: sanity methods, per-face fidelity
metrics, paired deltas with bootstrap intervals in every table, plain folders for every role."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrfacebench import io
from lrfacebench.bench.leaderboard import Row, aggregate, read_rows, render_markdown, write_rows
from lrfacebench.cli import main
from lrfacebench.data.faces import list_sample, load_faces
from lrfacebench.degrade import downsample, upsample
from lrfacebench.methods import get_method
from lrfacebench.metrics.identity import identity_cosine, lr_consistency


@pytest.fixture(scope="module")
def lr_faces() -> torch.Tensor:
    return load_faces(list_sample("lr", ("test",))).images[:16].float() / 255


def _method(name: str):
    cls = get_method(name)
    return cls(cls.make_config("paper"), "cpu").eval()


def test_sanity_methods_on_real_faces(lr_faces):
    nearest = _method("nearest").super_resolve(lr_faces)
    assert torch.equal(nearest, lr_faces.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    bicubic = _method("bicubic").super_resolve(lr_faces)
    noisy = _method("bicubic_noise")
    out = noisy.super_resolve(lr_faces)
    inside = (bicubic > 0.1) & (bicubic < 0.9)  # away from the clamp
    assert (out - bicubic)[inside].std().item() == pytest.approx(0.03, rel=0.05)
    # each face's noise depends on that face only, not on its batch or position
    assert torch.equal(noisy.super_resolve(lr_faces[5:7])[1], out[6])
    assert not torch.equal(out[0] - bicubic[0], out[1] - bicubic[1])


def test_identity_cosine_and_lr_consistency_on_real_faces():
    hr = load_faces(list_sample("hr", ("test",))).images[:12].float() / 255
    lr = downsample(hr)
    assert lr_consistency(hr, lr) == pytest.approx(np.zeros(12), abs=1e-6)  # DS(HR) explains its LR (float32)
    blurred = upsample(lr)
    err = lr_consistency(blurred, lr)
    assert (err > 0).all() and (err < 0.05).all()
    flat = torch.full_like(hr, 0.5)
    assert (lr_consistency(flat, lr) > 5 * err).all()

    def embed(x):  # a fixed random projection of pixels stands in for a recogniser
        g = torch.Generator().manual_seed(0)
        return x.flatten(1) @ torch.randn(x[0].numel(), 32, generator=g)

    assert identity_cosine(embed, hr, hr) == pytest.approx(np.ones(12))
    assert (identity_cosine(embed, blurred, hr) > identity_cosine(embed, hr.flip(0), hr)).mean() > 0.8
    with pytest.raises(ValueError, match="shape"):
        identity_cosine(embed, hr[:3], hr)


def _folders(root: Path, sample_dir: Path) -> dict[str, Path]:
    """Plain folders of real sample faces: 16 genuine-LR crops, 12 HR reference faces, 12 HR faces
    to degrade (other identities than the reference's)."""
    hr_test = list_sample("hr", ("test",))
    lr_test = list_sample("lr", ("test",))
    out = {k: root / k for k in ("genuine", "reference", "hr")}
    for paths, folder in ((lr_test.paths[:16], out["genuine"]), (hr_test.paths[:12], out["reference"]),
                          (hr_test.paths[-12:], out["hr"])):
        folder.mkdir(parents=True)
        for p in paths:
            shutil.copy(p, folder / p.name)
    return out


@pytest.mark.slow
def test_protocol_command_writes_deltas_intervals_and_sanity_rows(tmp_path, sample_dir):
    f = _folders(tmp_path / "in", sample_dir)
    runner = CliRunner()
    built = runner.invoke(main, ["build-dataset", "degraded", "--root", str(f["hr"]), "--out",
                                 str(tmp_path / "deg"), "--seed", "0"], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    out = tmp_path / "res"
    args = ["benchmark", "--table", "1", "--table", "table_degraded", "--methods", "bicubic", "--methods", "nearest",
            "--methods", "bicubic_noise", "--genuine", f"tiny={f['genuine']}", "--paired", f"deg={tmp_path / 'deg'}",
            "--reference", str(f["reference"]), "--out", str(out), "--device", "cpu", "--bootstrap", "300",
            "--train"]  # the recogniser is trained (smoke), not taken from the zoo
    res = runner.invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = {(r.table, r.dataset, r.method, r.metric): r for r in read_rows(out / "leaderboard.csv")
            if r.source == "reproduced"}
    fid = rows[("table1", "tiny", "nearest", "fid")]
    assert fid.n_images == 16 and "reference=reference(N=12)" in fid.protocol and "bootstrap(300)" in fid.protocol
    assert fid.std > 0 and fid.delta_vs == "bicubic" and fid.delta_ci_low <= fid.delta <= fid.delta_ci_high
    assert fid.delta == pytest.approx(fid.value - rows[("table1", "tiny", "bicubic", "fid")].value)
    assert math.isnan(rows[("table1", "tiny", "bicubic", "fid")].delta)  # the reference has no delta
    # on the paired degraded set, blocky nearest-neighbour is worse than bicubic, significantly
    psnr = rows[("table_degraded", "deg", "nearest", "psnr_y")]
    assert psnr.n_images == 12 and psnr.delta < 0 and psnr.significant and psnr.delta_ci_high < 0
    noisy = rows[("table_degraded", "deg", "bicubic_noise", "lr_consistency")]
    assert noisy.delta > 0 and noisy.significant and not noisy.higher_is_better
    ident = rows[("table_degraded", "deg", "bicubic", "identity_cos")]
    assert 0 < ident.value <= 1 and "recognizer=centreface-independent" in ident.protocol
    md = (out / "LEADERBOARD.md").read_text()
    assert "tiny: N=16 against reference (N=12) — small N" in md
    assert "Δ -" in md and "* marks an interval that excludes 0" in md

    # `lrfb evaluate identity` with the benchmark's recogniser: HR against itself is 1; swapping
    # two faces lowers exactly those two faces' cosines
    (recognizer,) = [p for p in (out / "runs").iterdir() if p.name.startswith("cr-")]
    hr = tmp_path / "deg" / "hr64"
    swapped = tmp_path / "swapped"
    shutil.copytree(hr, swapped)
    a, b = sorted(swapped.glob("*.png"))[:2]
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    for sr_dir, check in ((hr, lambda faces: all(abs(c - 1) < 1e-5 for c in faces.values())),
                          (swapped, lambda faces: sum(c < 0.9999 for c in faces.values()) == 2)):
        res = runner.invoke(main, ["evaluate", "identity", str(sr_dir), str(hr), "--recognizer", str(recognizer),
                                   "--device", "cpu", "--json", str(tmp_path / "id.json")])
        assert res.exit_code == 0, res.output
        (result,) = io.read_json(tmp_path / "id.json")["results"]
        assert result["n_images"] == 12 and check(result["per_face"]), result["per_face"]


def test_leaderboard_reads_old_files_renders_significance_and_merges_deltas(tmp_path):
    old = tmp_path / "old.csv"
    write_rows(old, [Row("table1", "x", "test", "cr", "default", "fid", 20.0)])
    text = old.read_text().splitlines()
    keep = text[0].split(",").index("delta")  # drop the four delta columns: a leaderboard from before
    old.write_text("\n".join(",".join(line.split(",")[:keep]) for line in text) + "\n")
    (row,) = read_rows(old)
    assert row.value == 20.0 and math.isnan(row.delta) and row.delta_vs == ""

    def r(method, value, delta=math.nan, low=math.nan, high=math.nan, run="s0"):
        return Row("table1", "x", "test", method, "default", "kid", value, n_images=81, run_id=run,
                   protocol="clean;reference=ref(N=62)", delta=delta, delta_ci_low=low, delta_ci_high=high,
                   delta_vs="bicubic" if not math.isnan(delta) else "")

    md = render_markdown([r("bicubic", 0.44), r("nearest", 0.48, 0.04, 0.01, 0.07)])
    assert "(Δ +0.040* [+0.010, +0.070])" in md and "No difference" not in md
    md = render_markdown([r("bicubic", 0.44), r("nearest", 0.45, 0.01, -0.02, 0.04)])
    assert "(Δ +0.010 [-0.020, +0.040])" in md and "No difference in this table is significant" in md
    assert "x: N=81 against ref (N=62) — small N" in md
    (m,) = aggregate([r("nearest", 0.48, 0.04, 0.01, 0.07), r("nearest", 0.46, 0.02, -0.01, 0.05, run="s1")])
    assert (m.value, m.delta, m.delta_ci_low, m.delta_ci_high, m.n_runs) == pytest.approx((0.47, 0.03, 0.0, 0.06, 2))


@pytest.mark.slow
def test_seeds_run_each_seed_and_merge(tmp_path, sample_dir):
    """--seeds runs the benchmark per seed into OUT/seed-S and merges them: n_runs per row, and
    each seed's delta interval (its own bootstrap weights) averaged."""
    f = _folders(tmp_path / "in", sample_dir)
    out = tmp_path / "res"
    res = CliRunner().invoke(main, ["benchmark", "--table", "degraded", "--methods", "bicubic", "--methods", "nearest",
                                    "--paired", f"plain={_pairs_folder(f['hr'])}", "--out", str(out),
                                    "--device", "cpu", "--seeds", "0,1", "--bootstrap", "200", "--train"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    per_seed = [{(r.method, r.metric): r for r in read_rows(out / f"seed-{s}" / "leaderboard.csv")} for s in (0, 1)]
    merged = {(r.method, r.metric): r for r in read_rows(out / "leaderboard.csv") if r.source == "reproduced"}
    row = merged[("nearest", "psnr_y")]
    assert row.n_runs == 2 and row.std == 0  # an untrained method gives the same value at every seed
    lows = [s[("nearest", "psnr_y")].delta_ci_low for s in per_seed]
    assert lows[0] != lows[1] and row.delta_ci_low == pytest.approx(sum(lows) / 2)
    assert "seeds 0, 1" in (out / "LEADERBOARD.md").read_text()


def _pairs_folder(hr: Path) -> Path:
    """A plain paired folder (hr/ and lr/ of the same names) from the HR crops in ``hr``: LR = a
    blurred 20x20 copy (resized to 16x16 when read)."""
    from PIL import Image, ImageFilter

    root = hr.parent / "pairs"
    for sub in ("hr", "lr"):
        (root / sub).mkdir(parents=True)
    for p in sorted(hr.iterdir()):
        img = Image.open(p).convert("RGB")
        img.save(root / "hr" / f"{p.stem}.png")
        img.filter(ImageFilter.GaussianBlur(2)).resize((20, 20), Image.BILINEAR).save(root / "lr" / f"{p.stem}.png")
    return root
