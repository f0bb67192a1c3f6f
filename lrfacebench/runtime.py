"""Device choice, seeding, RNG states, determinism, distributed (torchrun) context and environment records."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import platform
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lrfacebench
from lrfacebench.errors import LrfbError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` and ``cuda:N`` as given; ``cuda`` (and
    ``auto`` on CUDA) -> this rank's local GPU ``cuda:$LOCAL_RANK`` (``cuda:0`` outside torchrun).

    Raises :class:`~lrfacebench.errors.LrfbError` (a ``ValueError``, ``param="device"``) for a CUDA
    request on a machine without CUDA.
    """
    spec = str(spec).lower() if isinstance(spec, torch.device) else (spec or "auto").lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LrfbError(f"{spec}: CUDA is not available on this machine (use cpu or auto)", param="device")
    if dev.type == "cuda" and dev.index is None:  # CUDA RNG and memory queries need an index
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors: checkpoints hold tensors, numbers and
    strings only, so that ``torch.load(weights_only=True)`` can read them."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
             "numpy_extra": torch.tensor([pos, has_gauss], dtype=torch.int64),
             "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
             "python": torch.tensor(internal, dtype=torch.int64),
             "python_extra": torch.tensor([version, gauss is not None], dtype=torch.int64),
             "python_gauss": torch.tensor([gauss or 0.0], dtype=torch.float64)}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_extra"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"][0])))
    version, has = (int(v) for v in state["python_extra"])
    random.setstate((version, tuple(int(v) for v in state["python"]),
                     float(state["python_gauss"][0]) if has else None))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a ``torchrun`` job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistContext":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))


def git_sha() -> str | None:
    """Commit of the lrfacebench checkout, or ``None`` when not installed from git."""
    root = Path(lrfacebench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Versions, device and machine facts recorded with every run and result."""

    def ver(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    env: dict[str, Any] = {
        "lrfacebench": lrfacebench.__version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
        **{p: ver(p) for p in ("torch", "torchvision", "numpy", "facenet-pytorch", "clean-fid",
                               "opencv-python", "pillow", "scikit-image")},
        "cuda_available": torch.cuda.is_available(),
    }
    if device is not None:
        env["device"] = str(device)
        if device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
            env["cuda"] = torch.version.cuda
    return env
