"""What an LR-to-LR network does to its inputs: the residual ``r = f(x) - x`` over a set of faces.

- ``rms``: root mean square of r over all pixels (in the units of x; CR works in [-1,1]).
- ``fixed_share``: the share of the residual's energy that is one pattern, the same for every
  face: ``1 - ||r - mean_n r||^2 / ||r||^2`` (0 when the residuals of different faces are
  unrelated, 1 when the network adds the same image to every input). A regulariser that learns a
  degradation edits each face differently; one that paints a texture has a share near 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ResidualStats:
    rms: float
    fixed_share: float
    n: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}rms": self.rms, f"{prefix}fixed_share": self.fixed_share}


def residual_stats(before: torch.Tensor, after: torch.Tensor) -> ResidualStats:
    """Statistics of ``after - before``, both ``(N,C,H,W)`` float of the same range (N >= 2)."""
    if before.shape != after.shape or before.ndim != 4 or len(before) < 2:
        raise ValueError(f"need two (N,C,H,W) tensors of one shape with N >= 2, got "
                         f"{tuple(before.shape)} and {tuple(after.shape)}")
    r = (after.double() - before.double())
    energy = float(r.pow(2).sum())
    if energy == 0:
        return ResidualStats(0.0, 0.0, len(r))
    varying = float((r - r.mean(dim=0, keepdim=True)).pow(2).sum())
    return ResidualStats(float(r.pow(2).mean().sqrt()), 1.0 - varying / energy, len(r))
