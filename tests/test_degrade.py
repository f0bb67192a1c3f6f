"""DS (MATLAB-style antialiased bicubic) against an independent reference: PIL's float resize."""
import numpy as np
import pytest
import torch
from PIL import Image

from lrfacebench.degrade import downsample, imresize, resize_matrix, to_uint8, upsample
from lrfacebench.io import read_rgb


def _pil_resize(a: np.ndarray, size: int) -> np.ndarray:
    """Per-channel float32 PIL bicubic (a=-0.5, support scaled when shrinking)."""
    return np.stack([np.asarray(Image.fromarray(a[..., c].astype(np.float32), mode="F")
                                .resize((size, size), Image.BICUBIC)) for c in range(a.shape[-1])], -1)


@pytest.fixture(scope="module")
def hr_face(sample_dir):
    path = sorted((sample_dir / "hr").glob("*.jpg"))[0]
    a = read_rgb(path).astype(np.float64) / 255.0
    return np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((64, 64), Image.LANCZOS)) / 255.0


def test_downsample_matches_pil_bicubic_in_the_interior(hr_face):
    x = torch.from_numpy(hr_face).permute(2, 0, 1)[None].double()
    ours = downsample(x)[0].permute(1, 2, 0).numpy()
    ref = _pil_resize(hr_face, 16)
    assert ours.shape == (16, 16, 3)
    # PIL truncates the kernel at the border where MATLAB mirrors: compare away from it
    np.testing.assert_allclose(ours[2:-2, 2:-2], ref[2:-2, 2:-2], atol=1e-5)
    assert np.abs(ours - ref).max() < 0.1


def test_upsample_matches_pil_bicubic_in_the_interior(hr_face):
    lr = _pil_resize(hr_face, 16).astype(np.float64)
    ours = upsample(torch.from_numpy(lr).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours[8:-8, 8:-8], _pil_resize(lr, 64)[8:-8, 8:-8], atol=1e-5)


def test_kernel_is_keys_a_minus_half_antialiased():
    m = resize_matrix(64, 16)
    np.testing.assert_allclose(m.sum(1), 1.0)
    # output pixel 8 is centred at input coordinate 33.5 (0-based): 16 taps, inputs 26..41
    assert np.nonzero(m[8])[0].tolist() == list(range(26, 42))
    np.testing.assert_allclose(m[8, 26:34], m[8, 34:42][::-1], atol=1e-12)
    # a = -0.75 (PyTorch's bicubic) would give different weights
    torch_ds = torch.nn.functional.interpolate(torch.eye(64)[None, None].double(), size=(16, 64),
                                               mode="bicubic", antialias=True)[0, 0]
    assert not np.allclose(m, torch_ds.numpy(), atol=1e-3)


def test_ds_is_differentiable_and_keeps_dtype_device():
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    y = downsample(x)
    assert y.shape == (2, 3, 16, 16) and y.dtype == torch.float32
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_constant_image_is_preserved_and_quantised_exactly():
    x = torch.full((1, 3, 64, 64), 0.5)
    assert torch.allclose(downsample(x), torch.full((1, 3, 16, 16), 0.5), atol=1e-6)
    assert to_uint8(torch.tensor([-0.1, 0.5, 1.2])).tolist() == [0, 128, 255]


def test_alternative_kernels_and_bad_shapes():
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(imresize(x, (16, 16), "avgpool"), torch.nn.functional.avg_pool2d(x, 4))
    assert imresize(x, (16, 16), "bilinear").shape == (1, 3, 16, 16)
    with pytest.raises(ValueError):
        imresize(x[0], (16, 16))
    with pytest.raises(ValueError):
        imresize(x, (16, 16), "lanczos")  # type: ignore[arg-type]
