"""``lrfb diagnose`` on a real CR smoke run (the embedded sample) and a non-CR run (test_train:TinySR).

The CR run trains every stage for 2 steps at batch 2 (metrics.csv gets a row per step; stage 1's
SR is MSE only, as in the cpu preset, which halves the run's time); the diagnosis reads small
plain folders of sample faces (--genuine, --reference) to stay fast.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lrfacebench import diagnose as dg
from lrfacebench.diagnose import batchnorm, metrics_log, residuals
from lrfacebench.diagnose.report import _render_metrics, render
from lrfacebench.diagnose.faces import check_run, load_diagnosis_faces, load_run_method
from lrfacebench.diagnose.regulation import regulation_report
from lrfacebench.cli import main
from lrfacebench.data.faces import list_folder, list_sample, load_faces
from lrfacebench.degrade import to_uint8
from lrfacebench.io import write_png_folder
from lrfacebench.metrics.fid import compute_fid, compute_kid
from lrfacebench.metrics.residual import residual_stats
from lrfacebench.runs import load_method
from lrfacebench.training.loop import train

N_FACES = 16  # faces copied into each plain test folder


def _folder(tmp: Path, kind: str, name: str) -> Path:
    """A plain folder (no manifest) holding the first N_FACES test faces of the sample's ``kind``."""
    out = tmp / name
    out.mkdir()
    for p in list_sample(kind, ("test",)).paths[:N_FACES]:
        shutil.copy(p, out / p.name)
    return out


@pytest.fixture(scope="module")
def cr_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cr") / "run"
    return train("cr", "smoke", out=out, device="cpu", seed=0,
                 overrides=["batch_size=2", "fr_batch_size=2", "sr_adv_weight=0", "engine.log_every=1",
                            "engine.n_samples=2", "engine.keep_stage_checkpoints=false"])


@pytest.fixture(scope="module")
def cr_method(cr_run):
    """Every net of the run's newest checkpoint, as the diagnosis loads them."""
    return load_method(cr_run, nets="all")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("faces")
    return {"genuine": _folder(tmp, "lr", "genuine"), "reference": _folder(tmp, "hr", "reference")}


@pytest.fixture(scope="module")
def diagnosed(cr_run, folders, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("diag")
    res = CliRunner().invoke(main, ["diagnose", str(cr_run), "--genuine", str(folders["genuine"]),
                                    "--reference", str(folders["reference"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_phi_cr_residuals_are_finite_and_match_a_recomputation(cr_method, folders, diagnosed):
    out, printed = diagnosed
    report = json.loads((out / "diagnose.json").read_text())
    assert report["finished"] and report["weights"] == "checkpoints/03_stage2_done.pt"
    res = report["phi_cr_residual"]
    for name in ("genuine_test", "genuine_train", "artificial"):
        assert math.isfinite(res[name]["rms"]) and 0 <= res[name]["rms"] <= 1
        assert 0 <= res[name]["fixed_share"] <= 1
    assert res["genuine_test"]["n"] == res["artificial"]["n"] == N_FACES
    assert res["genuine_train"]["n"] == len(list_sample("lr", ("train",)))  # the run's own training faces
    # independently: quantised DS of the reference faces, phi_cr in [-1,1], RMS of the residual
    hr = load_faces(list_folder(folders["reference"], "hr")).images.float() / 255
    from lrfacebench.degrade import downsample, to_uint8

    x = to_uint8(downsample(hr)).float() / 255 * 2 - 1
    with torch.no_grad():
        rms = float((cr_method.nets["phi_cr"](x) - x).pow(2).mean().sqrt())
    assert res["artificial"]["rms"] == pytest.approx(rms, rel=1e-4)
    assert res["artificial_rms_ok"] == (rms < residuals.ARTIFICIAL_RMS_LIMIT)
    assert f"phi_cr(x_a) vs x_a RMS {res['artificial']['rms']:.4f}" in printed
    lr = report["lr_consistency"]
    assert lr["n"] == N_FACES and 0 < lr["mean"] < 1


def test_table5_is_fid_and_kid_of_the_stored_faces_against_artificial_lr(cr_run, cr_method, folders, diagnosed,
                                                                         tmp_path):
    """Table 5's four numbers equal compute_fid / compute_kid of the genuine and the regulated test
    faces, written as PNGs here, against DS of the reference faces."""
    out, printed = diagnosed
    t5 = json.loads((out / "diagnose.json").read_text())["table5"]
    faces = load_diagnosis_faces(cr_run, folders["genuine"], folders["reference"])
    with torch.no_grad():
        regulated = cr_method.regulate(faces.genuine_test)
    sets = {k: write_png_folder(tmp_path / k, to_uint8(v))
            for k, v in (("genuine", faces.genuine_test), ("regulated", regulated), ("artificial", faces.artificial))}
    for name in ("genuine", "regulated"):
        assert t5[name]["fid"] == pytest.approx(compute_fid(sets[name], sets["artificial"], use_cache=False).value,
                                                rel=1e-5)
        assert t5[name]["kid"] == pytest.approx(compute_kid(sets[name], sets["artificial"], use_cache=False).value,
                                                rel=1e-5, abs=1e-7)
    assert t5["regulated"]["fid"] != t5["genuine"]["fid"]  # phi_cr changed the faces
    assert t5["regulated_closer"]["fid"] == (t5["regulated"]["fid"] < t5["genuine"]["fid"])
    assert t5["n_genuine"] == t5["n_artificial"] == N_FACES
    d = t5["delta"]["fid"]
    assert d["value"] == pytest.approx(t5["regulated"]["fid"] - t5["genuine"]["fid"])
    assert d["low"] < d["high"] and d["significant"] == (d["low"] > 0 or d["high"] < 0)
    verdict = "closer" if t5["regulated_closer"]["fid"] else "NOT closer"
    assert f"R-LR - G-LR by FID {d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]: regulated faces {verdict}" \
        in printed


def test_table5_interval_is_paired_over_the_genuine_faces(cr_run, cr_method, folders, monkeypatch):
    """A phi_cr that returns its input gives R-LR = G-LR face for face: with replicates paired over
    the faces, every replicate difference, hence the interval, is exactly 0 (unpaired resamples
    would spread it)."""
    faces = load_diagnosis_faces(cr_run, folders["genuine"], folders["reference"])
    monkeypatch.setattr(cr_method, "regulate", lambda x: x)
    t5 = regulation_report(cr_method, faces)
    for m in ("fid", "kid"):
        assert t5["delta"][m] == {"value": 0.0, "low": 0.0, "high": 0.0, "significant": False}


def test_identity_critic_scores_are_d_prime_on_phi_fr_features(cr_method, folders, diagnosed):
    """Stage 2 ran, so the report has D''s scores of the run's HR training faces, the reference
    (unseen) HR faces and SR of the genuine faces; each equals D' on phi_fr's features recomputed
    here, and each AUC the Mann-Whitney statistic of those scores."""
    from scipy.stats import mannwhitneyu

    out, printed = diagnosed
    critic = json.loads((out / "diagnose.json").read_text())["identity_critic"]
    hr_test = load_faces(list_folder(folders["reference"], "hr")).images.float() / 255
    hr_train = load_faces(list_sample("hr", ("train",))).images.float() / 255
    genuine = load_faces(list_folder(folders["genuine"], "lr")).images.float() / 255
    with torch.no_grad():
        sets = {"hr_train": hr_train, "hr_test": hr_test, "sr_genuine": cr_method.super_resolve(genuine)}
        scores = {}
        for name, x in sets.items():
            feat = cr_method.nets["phi_fr"].embed(x * 2 - 1)
            if cr_method.config.d_prime_input == "l2norm":
                feat = torch.nn.functional.normalize(feat, dim=1)
            scores[name] = torch.sigmoid(cr_method.nets["D_prime"](feat)).flatten().numpy()
            assert critic["sets"][name]["n"] == len(x)
            assert critic["sets"][name]["p_real"] == pytest.approx(float(scores[name].mean()), abs=1e-5)
            assert -1 <= critic["sets"][name]["centre_cos"] <= 1
    for key, auc in critic["auc"].items():
        a, b = key.split("_vs_")
        expected = mannwhitneyu(scores[a], scores[b]).statistic / (len(scores[a]) * len(scores[b]))
        assert auc["value"] == pytest.approx(expected, abs=1e-6)
        assert auc["low"] <= auc["value"] <= auc["high"]
    assert "identity critic D' (Eq. 8)" in printed


def test_batch_norm_gaps_name_the_layers_and_leave_the_nets_alone(cr_method, diagnosed):
    out, printed = diagnosed
    bn = json.loads((out / "diagnose.json").read_text())["batch_norm"]
    for net in ("phi_sr", "phi_cr", "phi_cr_tilde"):
        layers = [row["layer"] for row in bn[net]["layers"]]
        assert layers and all(math.isfinite(row["var_gap_rel"]) for row in bn[net]["layers"])
        assert f"{net} (" in printed and f"    {layers[0]} " in printed
    assert "trunk.13" in [row["layer"] for row in bn["phi_sr"]["layers"]]  # the BN closing group 1
    assert bn["D"] == {"skipped": "no batch-norm layers"}
    assert "cr_bn=fixed" in bn["phi_cr"]["note"] and "sr_bn_stage2=frozen" in bn["phi_sr"]["note"]
    # the check runs on copies: the loaded nets' running statistics do not move
    phi_sr = cr_method.nets["phi_sr"]
    before = {k: v.clone() for k, v in phi_sr.state_dict().items()}
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    gaps = batchnorm.bn_gaps(phi_sr, x)
    assert all(torch.equal(before[k], v) for k, v in phi_sr.state_dict().items())
    assert not phi_sr.training and gaps["output_gap"] > 0
    # the first BN layer sees the same input in both modes
    first = gaps["layers"][0]
    assert first["mean_gap_sd"] == pytest.approx(first["eval_mean_gap_sd"])


def test_metrics_summary_matches_the_last_rows_of_metrics_csv(cr_run, diagnosed):
    out, printed = diagnosed
    stages = json.loads((out / "diagnose.json").read_text())["metrics"]["stages"]
    with open(cr_run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    last = {(r["stage"], r["name"]): float(r["value"]) for r in rows}
    assert {(s, n) for s, names in stages.items() for n in names} == set(last)
    for (stage, name), value in last.items():
        assert stages[stage][name]["last"] == value
    sr = stages["stage1_sr"]["L_sr"]
    assert sr["n"] == 2 and sr["kind"] == "loss" and sr["min"] <= sr["tail_mean"] <= sr["max"]
    first = next(r for r in rows if (r["stage"], r["name"]) == ("stage1_sr", "L_sr"))
    assert sr["first"] == float(first["value"])
    assert "stage1_sr   L_sr " in printed


def test_residual_grid_png(diagnosed):
    out, _ = diagnosed
    with Image.open(out / "residuals.png") as im:
        # 4 columns and 2 x 8 rows of 64 px cells with 2 px gaps, under a 14 px header
        assert im.size == (4 * 66 + 2, 14 + 16 * 66 + 2)


def test_loss_scale_check_compares_last_gradient_norms_per_net(tmp_path):
    """gn_<term>_<net> as CR logs them: terms are compared on one net at a time, on the last
    values; 0 (a term that does not reach the net) is not compared; a half-written row is skipped."""
    path = tmp_path / "metrics.csv"
    path.write_text("stage,step,name,value,time_s\n"
                    "s,1,gn_L_sr_phi_sr,1,0\ns,1,gn_L_cr_gan_phi_sr,1,0\ns,1,gn_L_cr_phi_cr_tilde,1,0\n"
                    "s,2,gn_L_sr_phi_sr,0.5,1\ns,2,gn_L_cr_gan_phi_sr,1e-3,1\ns,2,gn_L_cr_phi_sr,0,1\n"
                    "s,2,gn_L_cr_phi_cr_tilde,1e-4,1\ns,2,gn_L_cr_phi_cr,1,1\ns,2,L_sr,3,1\n"
                    "s,3,gn_L_sr_phi_sr,half-writ")  # a killed run's last line
    summary = metrics_log.metrics_summary(path, nets=["phi_sr", "phi_cr", "phi_cr_tilde"])
    assert summary["stages"]["s"]["gn_L_sr_phi_sr"]["last"] == 0.5
    assert summary["stages"]["s"]["gn_L_sr_phi_sr"]["kind"] == "grad_norm"
    assert [(f["net"], f["large"], f["small"], f["ratio"]) for f in summary["grad_norm_flags"]] == [
        ("phi_sr", "L_sr", "L_cr_gan", pytest.approx(500.0))]
    assert metrics_log.split_grad_norm("gn_L_cr_phi_cr_tilde", ["phi_cr", "phi_cr_tilde"]) == ("L_cr", "phi_cr_tilde")
    assert "on phi_sr the gradient norm of L_sr is 500x that of L_cr_gan" in "\n".join(
        _render_metrics(summary))


def test_fixed_share_of_a_pattern_and_of_noise_on_real_faces():
    """The probe on real faces: one pattern added to every face is all 'fixed', independent
    noise almost none of it (1/N expected), both at once about half."""
    faces = load_faces(list_sample("lr", ("test",))).images.float() / 255 * 2 - 1
    g = torch.Generator().manual_seed(0)
    pattern = 0.05 * torch.randn(1, 3, 16, 16, generator=g)
    noise = 0.05 * torch.randn(faces.shape, generator=g)
    assert residual_stats(faces, faces + pattern).fixed_share == pytest.approx(1.0)
    assert residual_stats(faces, faces + noise).fixed_share < 3 / len(faces)
    assert residual_stats(faces, faces + pattern + noise).fixed_share == pytest.approx(0.5, abs=0.1)


def test_a_run_without_phi_cr_gets_lr_and_sr_only(tmp_path, folders):
    run = train("test_train:TinySR", "smoke", out=tmp_path / "run", device="cpu",
                overrides=["pretrain_iterations=2", "finetune_iterations=2"])
    report = dg.diagnose(run, folders["genuine"], folders["reference"], out=tmp_path / "diag")
    assert report["phi_cr_residual"] is None
    bn = report["batch_norm"]["sr"]
    assert bn["input"] == "genuine_test [0,1]" and [x["layer"] for x in bn["layers"]] == ["1"]
    assert report["table5"] is None and "Table 5: not applicable" in render(report)
    assert report["identity_critic"] is None
    with Image.open(tmp_path / "diag" / "residuals.png") as im:
        assert im.size == (2 * 66 + 2, 14 + 16 * 66 + 2)


@pytest.mark.parametrize("make", ["missing", "not_a_run"])
def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, make):
    run = tmp_path / "runs" / "x"
    if make == "not_a_run":
        run.mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(run / "face.png")
    res = CliRunner().invoke(main, ["diagnose", str(run)])
    assert res.exit_code != 0 and str(run) in res.output
    assert ("no such run directory" if make == "missing" else "not a training run") in res.output
    assert "Traceback" not in res.output


def test_an_unfinished_run_uses_its_newest_loadable_checkpoint(cr_run, tmp_path):
    """No final.pt yet, and a newer checkpoint that is broken (a killed save): the newest one that
    loads is used, with every net."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "env.json", "metrics.csv"):
        shutil.copy(cr_run / name, run / name)
    (run / "checkpoints" / "03_stage2_done.pt").symlink_to(cr_run / "checkpoints" / "03_stage2_done.pt")
    (run / "checkpoints" / "04_later_00000001.pt").write_bytes(b"half-written")
    check_run(run)
    method, weights = load_run_method(run, "cpu")
    assert weights == "checkpoints/03_stage2_done.pt" and {"phi_cr", "phi_cr_tilde", "D"} <= set(method.nets)
