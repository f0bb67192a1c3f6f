"""Per-face fidelity of super-resolved faces to their ground truth, for paired test sets.

- :func:`identity_cosine`: cosine similarity between a recogniser's features of SR and of HR of
  the same face (the feature is ``embed(x) + embed(hflip(x))``, L2-normalised, as for rank-1).
  The recogniser must be one that no evaluated method trained against (the benchmark uses the
  independently trained CentreFace of Table 2); higher is better, 1 = same identity features.
- :func:`lr_consistency`: mean absolute difference ``|DS(SR) - x|`` in [0,1] units between the
  down-sampled SR output and the LR input it came from; lower is better. It measures whether an
  output still explains its input, whatever degradation produced that input.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from lrfacebench.degrade import downsample
from lrfacebench.metrics.recognition import flip_features


def identity_cosine(embed: Callable, sr: torch.Tensor, hr: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """``(N,)`` float64 cosines of ``sr`` and ``hr`` ``(N,3,64,64)`` float in [0,1] under ``embed``."""
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: sr {tuple(sr.shape)} vs hr {tuple(hr.shape)}")
    a = flip_features(embed, sr, batch_size).astype(np.float64)
    b = flip_features(embed, hr, batch_size).astype(np.float64)
    return (a * b).sum(axis=1)


def lr_consistency(sr: torch.Tensor, lr: torch.Tensor) -> np.ndarray:
    """``(N,)`` float64 mean ``|DS(sr) - lr|`` per face; ``sr`` ``(N,3,4h,4w)``, ``lr`` ``(N,3,h,w)``,
    both float in [0,1]."""
    if sr.shape[0] != lr.shape[0] or sr.shape[-2:] != tuple(4 * s for s in lr.shape[-2:]):
        raise ValueError(f"sr {tuple(sr.shape)} is not x4 of lr {tuple(lr.shape)}")
    err = (downsample(sr.double()) - lr.double()).abs()
    return err.flatten(1).mean(dim=1).numpy()
