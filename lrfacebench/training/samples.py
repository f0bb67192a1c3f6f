"""What a run shows of itself while it trains: sample grids (``RUN/samples/*.png``, the paper's Fig. 5)
of fixed faces, and the fixed faces :meth:`Method.probe` measures.

Faces are ``(N,3,16,16)`` float in [0,1] (LR) and ``(N,3,64,64)`` float in [0,1] (HR).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from lrfacebench.data.faces import FaceSet
from lrfacebench.degrade import downsample
from lrfacebench.grids import grid_array
from lrfacebench.methods import Method
from lrfacebench.pixels import quantise, to_unit_float

PROBE_FACES = 64  # faces Method.probe measures at sample intervals (each of genuine and artificial)


@contextlib.contextmanager
def inference_mode(method: Method) -> Iterator[None]:
    """Eval mode, no grad and a forked RNG. Afterwards the method gets ``train(mode)`` back (a
    method may track its mode, as CR does) and every module its own previous train/eval flag."""
    flags = [(m, m.training) for net in method.nets.values() for m in net.modules()]
    was_training = any(flag for _, flag in flags)
    devices = [method.device] if method.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        method.eval()
        try:
            yield
        finally:
            method.train(was_training)
            for m, flag in flags:
                m.training = flag


def sample_grid(method: Method, lr: torch.Tensor, artificial: bool = False,
                hr: torch.Tensor | None = None) -> np.ndarray:
    """RGB uint8 ``(H,W,3)`` grid: a row per face of ``lr`` ``(N,3,16,16)`` in [0,1]; columns
    LR | regulated LR (if the method regulates) | SR | HR (if given), LR columns nearest x4."""
    with inference_mode(method):
        sr = method.super_resolve(lr, artificial=artificial).float()
        reg = None if artificial else method.regulate(lr)
    cols = [("DS(HR)" if artificial else "genuine LR", lr)]
    if reg is not None:
        cols.append(("regulated", reg))
    cols.append(("SR", sr))
    if hr is not None:
        cols.append(("HR", hr))
    return grid_array(cols)


@dataclass
class FixedFaces:
    """The faces of every sample grid of a run, and those :meth:`Method.probe` measures.

    ``lr``: genuine LR (or ``DS(hr)`` when the run has no genuine LR, then ``artificial``);
    ``hr``: the HR faces ``lr`` came from (artificial only); ``probe_genuine``/``probe_artificial``:
    up to :data:`PROBE_FACES` genuine LR and quantised ``DS(HR)`` faces (``None`` without such data).
    """

    lr: torch.Tensor
    artificial: bool
    hr: torch.Tensor | None
    probe_genuine: torch.Tensor | None
    probe_artificial: torch.Tensor | None


def _spaced(fs: FaceSet, k: int, device: torch.device) -> torch.Tensor:
    """``min(k, N)`` evenly spaced faces of ``fs`` as float in [0,1] on ``device``."""
    idx = torch.linspace(0, len(fs) - 1, min(k, len(fs))).round().long()
    return to_unit_float(fs.images[idx]).to(device)


def fixed_faces(sets: dict[str, FaceSet], n: int, device: torch.device) -> FixedFaces:
    """Evenly spaced genuine LR faces for the grids (else DS of HR faces), and the probe faces."""
    genuine = _spaced(sets["lr"], PROBE_FACES, device) if "lr" in sets else None
    artificial = quantise(downsample(_spaced(sets["hr"], PROBE_FACES, device))) if "hr" in sets else None
    if "lr" in sets:
        return FixedFaces(_spaced(sets["lr"], n, device), False, None, genuine, artificial)
    hr = _spaced(sets["hr"], n, device)
    return FixedFaces(downsample(hr), True, hr, genuine, artificial)


def grid_and_probes(method: Method, faces: FixedFaces) -> tuple[np.ndarray, dict[str, float]]:
    """The sample grid of ``faces`` and the method's probe values on them."""
    grid = sample_grid(method, faces.lr, faces.artificial, faces.hr)
    with inference_mode(method):
        probes = method.probe(faces.probe_genuine, faces.probe_artificial)
    return grid, probes
