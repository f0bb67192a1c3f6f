"""The benchmark harness end to end on real sample faces (bicubic only: no training needed)."""
import csv
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lrfacebench.bench.leaderboard import read_rows
from lrfacebench.cli import main
from lrfacebench.data.faces import list_sample, load_faces

FIELDS = ["face_id", "source", "frame", "time_s", "x1", "y1", "x2", "y2", "score", "width", "height",
          "identity", "split", "crop", "lr16", "hr64", "sha256"]


def _dataset(root: Path, faces, split: str, hr: bool) -> Path:
    """A tiny dataset folder in the build-dataset layout from decoded sample faces."""
    rows = []
    for i, img in enumerate(faces.images):
        fid = f"s00000-{i:06d}"
        arr = img.permute(1, 2, 0).numpy()
        rel = f"{'hr64' if hr else 'lr16'}/{fid}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / rel)
        if hr:
            lr = np.asarray(Image.fromarray(arr).resize((16, 16), Image.BICUBIC))
            (root / "lr16").mkdir(exist_ok=True)
            Image.fromarray(lr).save(root / f"lr16/{fid}.png")
        rows.append({"face_id": fid, "source": faces.names[i], "identity": "", "split": split,
                     "crop": rel, "lr16": f"lr16/{fid}.png", "hr64": rel if hr else "", "sha256": ""})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    hr = load_faces(list_sample("hr", ("test",)))
    lr = load_faces(list_sample("lr", ("test",)))
    hr.images, lr.images = hr.images[:10], lr.images[:12]
    hr.names, lr.names = hr.names[:10], lr.names[:12]
    return {"celeba": _dataset(root / "celeba", hr, "test", hr=True),
            "lr-tiny": _dataset(root / "lr-tiny", lr, "test", hr=False)}


@pytest.mark.slow
def test_tables_from_real_faces_then_resume_from_cache(tmp_path, tiny_data):
    out = tmp_path / "res"
    args = ["benchmark", "--table", "1", "--table", "3", "--table", "5", "--table", "complexity",
            "--methods", "bicubic", "--out", str(out), "--device", "cpu",
            "--data", f"celeba={tiny_data['celeba']}", "--data", f"lr-tiny={tiny_data['lr-tiny']}"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("table1.csv", "table3.csv", "table5.csv", "complexity.csv", "leaderboard.csv",
                 "LEADERBOARD.md", "env.json", "figures/fig4_lr-tiny.png"):
        assert (out / name).is_file(), name
    rows = read_rows(out / "leaderboard.csv")
    ours = {(r.table, r.dataset, r.method, r.metric): r for r in rows if r.source == "reproduced"}
    fid = ours[("table1", "lr-tiny", "bicubic", "fid")]
    assert fid.n_images == 12 and fid.value > 0 and "reference=celeba(N=10)" in fid.protocol
    assert "sha256=" in fid.protocol  # the Inception weights are named in every FID row
    # Table 3 falls back to the sample's held-out HR faces: bicubic x4 of real faces is ~25 dB
    psnr = ours[("table3", "sample-hr", "bicubic", "psnr_y")]
    assert 20 < psnr.value < 32 and psnr.n_images == len(list_sample("hr", ("test",))) and psnr.higher_is_better
    assert ours[("table5", "lr-tiny", "genuine-lr", "fid_vs_artificial_lr")].value > 0
    assert ours[("complexity", "-", "bicubic", "params_deployed_M")].value == 0
    assert ours[("complexity", "-", "bicubic", "ms_per_face")].value > 0
    paper = [r for r in rows if r.source == "paper"]
    assert paper and all(r.method != "bicubic" or r.table == "table2" for r in paper)
    md = (out / "LEADERBOARD.md").read_text()
    assert "*(reported in paper)*" in md and "lr-tiny: N=12" in md

    # A rerun finds every job done: it never needs the Inception network (a bad path proves it).
    (out / "table1.csv").unlink()
    rerun = CliRunner().invoke(main, args + ["--inception", str(tmp_path / "missing.pt")])
    assert rerun.exit_code == 0, rerun.output
    again = {(r.table, r.dataset, r.method, r.metric): r.value for r in read_rows(out / "leaderboard.csv")
             if r.source == "reproduced"}
    assert again[("table1", "lr-tiny", "bicubic", "fid")] == fid.value


def test_bad_arguments_fail_clearly(tmp_path):
    r = CliRunner().invoke(main, ["benchmark", "--table", "9", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "unknown table" in r.output
    r = CliRunner().invoke(main, ["benchmark", "--data", "nodir", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "NAME=DIR" in r.output
    # a --methods entry no selected table lists is refused, not silently dropped
    r = CliRunner().invoke(main, ["benchmark", "--table", "3", "--methods", "csri:synth", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "csri:synth" in r.output and "csri:synthetic" in r.output


def test_methods_select_a_name_or_one_variant():
    from lrfacebench.bench.evaluators import selects
    from lrfacebench.bench.provenance import RunKey
    cr, wo_cr, csri = RunKey.parse("cr"), RunKey.parse("cr:wo_cr"), RunKey.parse("csri:synthetic")
    assert selects(("cr",), cr) and selects(("cr",), wo_cr)
    assert selects(("cr:wo_cr",), wo_cr) and not selects(("cr:wo_cr",), cr)
    assert selects(("csri:synthetic",), csri) and selects(("csri",), csri) and not selects(("cr",), csri)


def test_leaderboard_merge_averages_two_runs(tmp_path):
    from lrfacebench.bench.leaderboard import Row, write_rows

    for seed, value in ((0, 20.0), (1, 22.0)):
        write_rows(tmp_path / f"s{seed}" / "leaderboard.csv",
                   [Row("table1", "lr-pipa", "test", "cr", "default", "fid", value, run_id=f"s{seed}")])
    r = CliRunner().invoke(main, ["leaderboard", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"),
                                  "--out", str(tmp_path / "pub")])
    assert r.exit_code == 0, r.output
    (row,) = read_rows(tmp_path / "pub" / "leaderboard.csv")
    assert row.value == 21.0 and math.isclose(row.std, math.sqrt(2)) and row.n_runs == 2
