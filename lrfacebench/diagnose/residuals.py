"""What the method does to its inputs: phi_cr's residual ``r = phi_cr(x) - x`` (CR, in [-1,1]
units, CR's internal range), LR consistency ``|DS(SR) - x|`` ([0,1] units) of the whole method, and
``residuals.png`` (the faces, phi_cr(x), r and the mean r of a set, amplified)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from lrfacebench.diagnose.faces import Faces
from lrfacebench.grids import grid_array
from lrfacebench.methods import Method
from lrfacebench.metrics.identity import lr_consistency
from lrfacebench.metrics.residual import residual_stats
from lrfacebench.pixels import unit_to_signed

ARTIFICIAL_RMS_LIMIT = 0.03  # phi_cr(x_a) vs x_a, [-1,1] units (the acceptance)
GRID_ROWS = 8  # faces per group (genuine, artificial) in residuals.png
AMPLIFY = 4.0  # residual shown as r * 4 + 0.5 ([0,1] units)
BATCH = 64  # faces per forward pass


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device,
            batch: int = BATCH) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``batch`` on ``device``, under no_grad; result on the CPU."""
    with torch.no_grad():
        return torch.cat([fn(chunk.to(device)).float().cpu() for chunk in x.split(batch)])


def phi_cr_signed(method: Method, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_s, phi_cr(x_s))`` for ``x`` ``(N,3,16,16)`` in [0,1]: CR's [-1,1] input and phi_cr's
    unclamped output (regulate() clamps, which would hide part of the residual)."""
    x_signed = unit_to_signed(x)
    return x_signed, batched(method.nets["phi_cr"], x_signed, method.device)


def phi_cr_residuals(method: Method, faces: Faces) -> dict[str, Any] | None:
    """residual_stats of phi_cr on each face set, [-1,1] units; None without phi_cr."""
    if "phi_cr" not in method.nets:
        return None
    out: dict[str, Any] = {"units": "[-1,1]"}
    for name in ("genuine_test", "genuine_train", "artificial"):
        s = residual_stats(*phi_cr_signed(method, getattr(faces, name)))
        out[name] = {"rms": s.rms, "fixed_share": s.fixed_share, "n": s.n}
    out["artificial_rms_limit"] = ARTIFICIAL_RMS_LIMIT
    out["artificial_rms_ok"] = out["artificial"]["rms"] < ARTIFICIAL_RMS_LIMIT
    return out


def lr_consistency_report(method: Method, faces: Faces) -> dict[str, float]:
    """Mean ``|DS(SR) - x|`` ([0,1] units) of the whole method (SR = super_resolve) on the genuine
    test faces."""
    sr = batched(method.super_resolve, faces.genuine_test, method.device)
    return {"mean": float(lr_consistency(sr, faces.genuine_test).mean()), "n": len(faces.genuine_test)}


def _amplified(r: torch.Tensor) -> torch.Tensor:
    """A residual in [0,1] units shown as ``r * AMPLIFY + 0.5`` (grid_array clamps to [0,1])."""
    return r * AMPLIFY + 0.5


def _phi_cr_rows(method: Method, x: torch.Tensor) -> list[torch.Tensor]:
    """The grid's four columns for the first :data:`GRID_ROWS` faces of ``x`` ``(N,3,16,16)`` [0,1]:
    x, regulate(x), residual x4 and the mean residual of all N faces x4 ([0,1] units)."""
    x_signed, y_signed = phi_cr_signed(method, x)
    r = (y_signed - x_signed) / 2  # [-1,1] -> [0,1] units
    k = min(GRID_ROWS, len(x))
    return [x[:k], batched(method.regulate, x[:k], method.device), _amplified(r[:k]),
            _amplified(r.mean(0, keepdim=True)).expand(k, -1, -1, -1)]


def _sr_rows(method: Method, x: torch.Tensor, artificial: bool) -> list[torch.Tensor]:
    """LR and SR columns for the first :data:`GRID_ROWS` faces of ``x``."""
    lr = x[:GRID_ROWS]
    return [lr, batched(lambda b: method.super_resolve(b, artificial=artificial), lr, method.device)]


def residual_grid(method: Method, faces: Faces) -> np.ndarray:
    """RGB uint8 grid: rows = :data:`GRID_ROWS` genuine then as many artificial test faces.

    With phi_cr, columns input | regulate(x) | residual x4 | mean residual of the whole set x4
    (the fixed pattern); otherwise LR | SR (the artificial rows through the artificial path).
    """
    if "phi_cr" in method.nets:
        titles = ("input", "phi_cr(x)", "r x4", "mean r x4")
        groups = [_phi_cr_rows(method, faces.genuine_test), _phi_cr_rows(method, faces.artificial)]
    else:
        titles = ("LR", "SR")
        groups = [_sr_rows(method, faces.genuine_test, False), _sr_rows(method, faces.artificial, True)]
    return grid_array([(t, torch.cat(column)) for t, column in zip(titles, zip(*groups))])
