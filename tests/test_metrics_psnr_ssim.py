"""PSNR/SSIM: golden values from scikit-image on real faces, hand-checkable cases, folder CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lrfacebench import degrade, io
from lrfacebench.cli import main
from lrfacebench.metrics import psnr_ssim as ps


@pytest.fixture(scope="module")
def pairs(sample_dir) -> list[tuple[np.ndarray, np.ndarray]]:
    """(SR, HR) uint8 64x64 pairs: HR = a real face, SR = bicubic x4 of its DS (Table 3's inputs)."""
    out = []
    for f in io.list_images(sample_dir / "hr")[:8]:
        x = torch.from_numpy(io.read_rgb(f)).permute(2, 0, 1)[None].double() / 255
        hr = degrade.imresize(x, (64, 64)).clamp(0, 1)
        sr = degrade.upsample(degrade.downsample(hr)).clamp(0, 1)
        out.append(tuple(degrade.to_uint8(t)[0].permute(1, 2, 0).numpy() for t in (sr, hr)))
    return out


def _reference(sr: np.ndarray, hr: np.ndarray, crop: int) -> dict[str, float]:
    """scikit-image with BasicSR/MATLAB settings; Y from skimage's own BT.601 conversion."""
    if crop:
        sr, hr = sr[crop:-crop, crop:-crop], hr[crop:-crop, crop:-crop]
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    ys, yh = rgb2ycbcr(sr)[..., 0], rgb2ycbcr(hr)[..., 0]
    return {"psnr_y": peak_signal_noise_ratio(yh, ys, data_range=255),
            "ssim_y": structural_similarity(ys, yh, **kw),
            "psnr_rgb": peak_signal_noise_ratio(hr, sr, data_range=255),
            "ssim_rgb": structural_similarity(sr, hr, channel_axis=2, **kw)}


@pytest.mark.parametrize("crop", [0, 4])
def test_golden_against_scikit_image_on_real_faces(pairs, crop):
    for sr, hr in pairs:
        ours, ref = ps.measure(sr, hr, crop_border=crop), _reference(sr, hr, crop)
        for m in ps.METRICS:
            assert ours[m] == pytest.approx(ref[m], abs=1e-9), m
        assert 20 < ours["psnr_y"] < 40 and 0.5 < ours["ssim_y"] < 1  # a real, imperfect SR
        assert ours["psnr_y"] > ours["psnr_rgb"]  # chroma errors are excluded on Y


def test_crop_border_is_a_crop(pairs):
    sr, hr = pairs[0]
    assert ps.measure(sr, hr, 4) == pytest.approx(ps.measure(sr[4:-4, 4:-4].copy(),
                                                             hr[4:-4, 4:-4].copy(), 0), abs=1e-12)
    assert ps.measure(sr, hr, 4) != ps.measure(sr, hr, 0)


def test_hand_checkable_values():
    black, white = np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)
    assert ps.rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    assert ps.rgb_to_y(white)[0, 0] == pytest.approx(235.0)

    a = np.full((32, 32, 3), 100, np.uint8)
    m = ps.measure(a, a)
    assert m["psnr_y"] == math.inf and m["psnr_rgb"] == math.inf
    assert m["ssim_y"] == pytest.approx(1.0) and m["ssim_rgb"] == pytest.approx(1.0)

    b = a + 1  # every pixel off by one grey level
    m = ps.measure(a, b)
    assert m["psnr_rgb"] == pytest.approx(20 * math.log10(255))  # 48.1308 dB
    assert m["psnr_y"] == pytest.approx(20 * math.log10(255 / (219 / 255)))  # dY = 219/255
    # flat images: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2
    c1 = (0.01 * 255) ** 2
    assert m["ssim_rgb"] == pytest.approx((2 * 100 * 101 + c1) / (100**2 + 101**2 + c1))


def test_bad_input_raises():
    a = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="shape mismatch"):
        ps.measure(a, np.zeros((64, 63, 3), np.uint8))
    with pytest.raises(TypeError, match="quantise"):
        ps.measure(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="RGB"):
        ps.measure(a[..., 0], a[..., 0])
    with pytest.raises(ValueError, match="at least 11x11"):
        ps.measure(a[:16, :16], a[:16, :16], crop_border=4)


def test_tensor_form_quantises_first(pairs):
    sr = torch.stack([torch.from_numpy(s).permute(2, 0, 1) for s, _ in pairs]).double() / 255
    hr = torch.stack([torch.from_numpy(h).permute(2, 0, 1) for _, h in pairs]).double() / 255
    noisy = sr + 0.4 / 255  # rounds back to the same uint8 values
    r = ps.measure_tensors(noisy, hr)
    assert r.n_images == len(pairs)
    assert r.per_image[0]["psnr_y"] == ps.measure(*pairs[0])["psnr_y"]


def test_folders_and_cli(pairs, tmp_path):
    sr_dir, hr_dir = tmp_path / "sr", tmp_path / "hr"
    for i, (sr, hr) in enumerate(pairs):
        io.write_png(sr_dir / f"face{i}.png", sr)
        io.write_png(hr_dir / f"face{i}.png", hr)
    r = ps.evaluate_folders(sr_dir, hr_dir)
    assert r.n_images == len(pairs)
    assert r.mean("psnr_y") == pytest.approx(np.mean([ps.measure(s, h)["psnr_y"] for s, h in pairs]))

    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate", "psnr-ssim", str(sr_dir), str(hr_dir),
                                    "--crop-border", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = {row["metric"]: row for row in json.loads(out.read_text())["results"]}
    assert set(rows) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    assert rows["psnr_y"]["protocol"] == "y;bt601;crop=4;uint8;mean-over-images"
    assert rows["ssim_rgb"]["protocol"] == "rgb;gauss11x11;sigma=1.5;crop=4;uint8;mean-over-images"
    assert rows["ssim_y"]["higher_is_better"] and rows["ssim_y"]["n_images"] == len(pairs)
    assert f"{ps.evaluate_folders(sr_dir, hr_dir, 4).mean('psnr_y'):.4f}" in res.output

    (hr_dir / "face0.png").unlink()
    res = CliRunner().invoke(main, ["evaluate", "psnr-ssim", str(sr_dir), str(hr_dir)])
    assert res.exit_code == 1 and "no counterpart" in res.output and "face0" in res.output
    io.write_png(hr_dir / "face0.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="face0: size mismatch"):
        ps.evaluate_folders(sr_dir, hr_dir)
