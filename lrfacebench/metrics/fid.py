"""FID and KID through clean-fid (0.1.35) with the TF-FID Inception network, offline, cached.

Pipeline of mode ``clean`` (clean-fid's default, ours too): each image is decoded with PIL
``convert("RGB")``, resized per channel to 299x299 by PIL bicubic on float32 (clean-fid's
``ResizeDataset``/``build_resizer``), and the network maps the ``(N,3,299,299)`` floats in
[0,255] to ``(N,2048)`` pool3 features after scaling them by ``(x-128)/128``. Mode
``legacy_tensorflow`` feeds the images at their own size and resizes inside the network
(TensorFlow's old bilinear), as clean-fid does. FID is the Fréchet distance of the two
feature Gaussians (:func:`frechet_distance`: clean-fid's value, computed faster); KID is the
unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets drawn as clean-fid
draws them (but seeded).

Weights: only the TF-FID Inception (``inception-2015-12-05``) is ever used, found offline and
checked by sha256 (:mod:`lrfacebench.metrics.inception`).

Features and statistics are cached under :func:`default_cache_dir`, keyed by the content hash of
the image files (:func:`lrfacebench.io.sha256_tree`), the mode, the weight file's sha256 and the
clean-fid version.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from cleanfid.utils import ResizeDataset
from tqdm import tqdm

from lrfacebench import io
from lrfacebench.metrics.inception import InceptionFeatures, load_inception

log = logging.getLogger(__name__)


class FIDError(ValueError):
    """An image set cannot be measured (empty, unreadable image, too few images)."""


# ----- features --------------------------------------------------------------------------------
class _CheckedResizeDataset(ResizeDataset):
    """clean-fid's decode + resize of a file that passed the library's image checks
    (:func:`lrfacebench.io.open_image`: size cap, decompression bombs, empty files), with the
    failing file named in the error."""

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            with io.open_image(self.files[i]):
                pass  # the header only: clean-fid decodes the pixels its own way
            return super().__getitem__(i)
        except (OSError, ValueError, SyntaxError) as e:  # io.UnreadableImage is a ValueError
            raise FIDError(f"{self.files[i]}: cannot read image for FID ({e})") from None


@contextlib.contextmanager
def _full_fp32() -> Iterator[None]:
    """Keep CUDA convolutions and matmuls in true float32 (no TF32), so that GPU features match
    CPU features to float32 rounding (deviation: clean-fid leaves PyTorch's TF32 default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def files_features(files: Sequence[Path], net: InceptionFeatures, batch_size: int = 32,
                   num_workers: int = 0) -> np.ndarray:
    """``(N,2048)`` float32 features of image files (clean-fid's decode and resize for ``net.mode``)."""
    device = next(net.parameters()).device
    loader = torch.utils.data.DataLoader(_CheckedResizeDataset([str(f) for f in files], mode=net.mode),
                                         batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out = []
    with torch.no_grad(), _full_fp32():
        try:
            for batch in tqdm(loader, desc=f"FID features ({len(files)} images)", disable=None,
                              leave=False):
                out.append(net(batch.to(device)).cpu().numpy())
        except RuntimeError as e:
            if "stack expects each tensor to be equal size" in str(e):
                raise FIDError("legacy_tensorflow batches need images of equal size; "
                               "use batch_size=1 or mode clean") from None
            raise
    return np.concatenate(out)


@dataclass(frozen=True)
class Features:
    """Inception features of one image set: ``feats`` ``(N,2048)`` float32 and what made them."""

    feats: np.ndarray
    files_sha256: str
    mode: str
    weights_sha256: str

    @property
    def n(self) -> int:
        return int(self.feats.shape[0])

    @property
    def key(self) -> str:
        return cache_key(self.files_sha256, self.mode, self.weights_sha256)


def default_cache_dir() -> Path:
    """``$LRFB_CACHE_DIR/fid``, else ``~/.cache/lrfacebench/fid``."""
    return io.cache_dir("fid")


def cache_key(files_sha256: str, mode: str, weights_sha256: str) -> str:
    return io.sha256_json({"files": files_sha256, "mode": mode, "weights": weights_sha256,
                           "clean-fid": importlib.metadata.version("clean-fid")})


def _image_files(folder: Path, files: Sequence[Path] | None) -> list[Path]:
    if not folder.is_dir():
        raise FIDError(f"{folder}: not a folder")
    files = sorted(Path(f) for f in files) if files is not None else io.list_images(folder)
    if not files:
        raise FIDError(f"{folder}: no images (extensions {', '.join(io.IMAGE_EXTENSIONS)})")
    return files


def folder_features(folder: str | Path, net: InceptionFeatures, files: Sequence[Path] | None = None,
                    cache_dir: str | Path | None = None, use_cache: bool = True,
                    batch_size: int = 32, num_workers: int = 0) -> Features:
    """Features of every image below ``folder`` (or of ``files`` inside it), from the cache when
    the same files were measured before with the same mode and weights."""
    folder = Path(folder)
    files = _image_files(folder, files)
    files_sha = io.sha256_tree(folder, files)
    key = cache_key(files_sha, net.mode, net.weights.sha256)
    path = Path(cache_dir or default_cache_dir()) / f"{key}.feats.npy"
    if use_cache and path.is_file():
        log.info("FID features of %s from cache %s", folder, path)
        feats = np.load(path)
    else:
        feats = files_features(files, net, batch_size, num_workers)
        if use_cache:
            with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, feats)
            io.write_json(path.with_suffix("").with_suffix(".json"),
                          {"folder": str(folder.resolve()), "n_images": len(files), "mode": net.mode,
                           "protocol": net.protocol, "files_sha256": files_sha})
    return Features(feats, files_sha, net.mode, net.weights.sha256)


def statistics(features: Features, cache_dir: str | Path | None = None,
               use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mu ``(2048,)``, sigma ``(2048,2048)``) computed as clean-fid does (mean of the float32
    features, ``np.cov`` in float64), cached beside the features."""
    if features.n < 2:
        raise FIDError(f"FID needs at least 2 images per set, got {features.n}")
    path = Path(cache_dir or default_cache_dir()) / f"{features.key}.stats.npz"
    if use_cache and path.is_file():
        with np.load(path) as z:
            return z["mu"], z["sigma"]
    mu, sigma = np.mean(features.feats, axis=0), np.cov(features.feats, rowvar=False)
    if use_cache:
        with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
    return mu, sigma


# ----- distances -------------------------------------------------------------------------------
def frechet_distance(stats_a: tuple[np.ndarray, np.ndarray],
                     stats_b: tuple[np.ndarray, np.ndarray],
                     feats_a: np.ndarray | None = None) -> float:
    """Fréchet distance ``|mu_a-mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))`` in float64.

    Deviation from clean-fid's ``frechet_distance`` (same formula): the trace of the matrix square
    root is the sum of the square roots of the eigenvalues of ``S_a S_b``, taken from a symmetric
    PSD matrix with the same non-zero eigenvalues instead of ``scipy.linalg.sqrtm`` of the
    non-symmetric product. With ``feats_a`` ``(N,D)`` (the features behind ``S_a``) and N < D,
    that matrix is the N x N ``X S_b X^T / (N-1)`` (X = centred ``feats_a``): for the small sets
    of this benchmark a 131x131 eigenproblem instead of 2048x2048. Otherwise it is
    ``S_a^(1/2) S_b S_a^(1/2)``. Same value (tests compare with clean-fid's ``compute_fid`` to
    1e-3), ~6x faster on a CPU at full rank and well defined for rank-deficient covariances.
    """
    (mu_a, sa), (mu_b, sb) = stats_a, stats_b
    diff = mu_a.astype(np.float64) - mu_b.astype(np.float64)
    if feats_a is not None and 1 < len(feats_a) < sa.shape[0]:
        x = feats_a.astype(np.float64) - feats_a.astype(np.float64).mean(axis=0)
        m = (x @ sb) @ x.T / (len(x) - 1)
    else:
        w, v = np.linalg.eigh(sa)
        root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        m = root_a @ sb @ root_a
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(sa) + np.trace(sb) - 2 * tr_covmean)


def kid_from_features(a: np.ndarray, b: np.ndarray, num_subsets: int = 100,
                      max_subset_size: int = 1000, seed: int = 0) -> tuple[float, float, int]:
    """KID of feature sets ``a`` ``(N,D)`` and ``b`` ``(M,D)``: (mean, std over subsets, subset size).

    Each subset draws ``m = min(N, M, max_subset_size)`` rows of ``b`` then of ``a`` without
    replacement (clean-fid's order, from ``np.random.RandomState(seed)``), kernel
    ``k(x,y) = (x.y/D + 1)^3``, unbiased MMD^2 (diagonals of k(x,x), k(y,y) left out); float64.
    When both sets are smaller than ``max_subset_size`` every subset is the whole set (std 0).
    """
    m = min(len(a), len(b), max_subset_size)
    if m < 2:
        raise FIDError(f"KID needs at least 2 images per set, got {len(a)} and {len(b)}")
    d = a.shape[1]
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(num_subsets):
        x = b[rng.choice(len(b), m, replace=False)].astype(np.float64)
        y = a[rng.choice(len(a), m, replace=False)].astype(np.float64)
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        within = kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)
        values.append(within / (m * (m - 1)) - 2 * kxy.sum() / m**2)
    return float(np.mean(values)), float(np.std(values)), m


# ----- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistributionResult:
    """FID or KID of image set A against reference set B."""

    metric: str  # "fid" or "kid"
    value: float
    std: float | None  # KID: std over subsets; FID: None
    n_images: int  # images in A
    n_reference: int  # images in B
    mode: str
    protocol: str  # e.g. "clean;inception-2015-12-05;sha256=..."
    weights_path: str
    extra: dict

    def rows(self) -> list[dict]:
        return [{"metric": self.metric, "value": self.value, "std": self.std,
                 "n_images": self.n_images, "n_reference": self.n_reference, "mode": self.mode,
                 "protocol": self.protocol, "higher_is_better": False,
                 "weights": self.weights_path, **self.extra}]


def _pair(dir_a: str | Path, dir_b: str | Path, net: InceptionFeatures | None, mode: str,
          inception: str | Path | None, device: str, **kw) -> tuple[InceptionFeatures, Features, Features]:
    net = net or load_inception(mode, inception, device)
    return net, folder_features(dir_a, net, **kw), folder_features(dir_b, net, **kw)


def compute_fid(dir_a: str | Path, dir_b: str | Path, net: InceptionFeatures | None = None,
                mode: str = "clean", inception: str | Path | None = None, device: str = "cpu",
                cache_dir: str | Path | None = None, use_cache: bool = True,
                batch_size: int = 32, num_workers: int = 0) -> DistributionResult:
    """FID between the images below ``dir_a`` and those below ``dir_b`` (lower is better).

    Equals ``cleanfid.fid.compute_fid(dir_a, dir_b, mode=mode, custom_feat_extractor=<same
    network>)`` for folders clean-fid lists the same way (tested to 1e-3).
    """
    kw = dict(cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size, num_workers=num_workers)
    net, fa, fb = _pair(dir_a, dir_b, net, mode, inception, device, **kw)
    sa = statistics(fa, cache_dir, use_cache)
    sb = statistics(fb, cache_dir, use_cache)
    return DistributionResult("fid", frechet_distance(sa, sb, fa.feats), None, fa.n, fb.n, net.mode,
                              net.protocol, str(net.weights.path), {})


def compute_kid(dir_a: str | Path, dir_b: str | Path, net: InceptionFeatures | None = None,
                mode: str = "clean", inception: str | Path | None = None, device: str = "cpu",
                cache_dir: str | Path | None = None, use_cache: bool = True,
                batch_size: int = 32, num_workers: int = 0, num_subsets: int = 100,
                max_subset_size: int = 1000, seed: int = 0) -> DistributionResult:
    """KID between the images below ``dir_a`` and those below ``dir_b`` (lower is better);
    unbiased at small N, which is why it is reported beside FID for small test sets."""
    kw = dict(cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size, num_workers=num_workers)
    net, fa, fb = _pair(dir_a, dir_b, net, mode, inception, device, **kw)
    value, std, m = kid_from_features(fa.feats, fb.feats, num_subsets, max_subset_size, seed)
    return DistributionResult("kid", value, std, fa.n, fb.n, net.mode,
                              f"{net.protocol};subsets={num_subsets}x{m};seed={seed}",
                              str(net.weights.path),
                              {"num_subsets": num_subsets, "subset_size": m, "seed": seed})
