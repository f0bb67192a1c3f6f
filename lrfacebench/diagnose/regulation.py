"""Table 5 for one run: does phi_cr bring genuine LR closer to artificial LR?

FID and KID, as the benchmark measures them (``compute_fid`` / ``compute_kid``: clean-fid
features of stored, quantised PNGs), of the genuine test faces ``x`` (G-LR) and of the regulated
``phi_cr(x)`` (R-LR), each against the artificial faces A-LR = to_uint8(DS(hr)). CR's phi_cr
should make both smaller. Point values only: at a few dozen faces they move by several FID points
under resampling (``benchmarks/real_genuine.py`` gives intervals).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lrfacebench import io
from lrfacebench.degrade import to_uint8
from lrfacebench.diagnose.faces import Faces
from lrfacebench.diagnose.residuals import batched
from lrfacebench.methods import Method
from lrfacebench.metrics.fid import compute_fid, compute_kid
from lrfacebench.metrics.inception import load_inception


def regulation_report(method: Method, faces: Faces, device: str = "cpu") -> dict[str, Any] | None:
    """``{"genuine": {"fid", "kid"}, "regulated": {...}, "regulated_closer": {"fid": bool, "kid":
    bool}, "n_genuine", "n_artificial"}``; None without phi_cr."""
    if "phi_cr" not in method.nets:
        return None
    sets = {"genuine": faces.genuine_test, "regulated": batched(method.regulate, faces.genuine_test, method.device),
            "artificial": faces.artificial}
    net = load_inception("clean", device=device)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lrfb-table5-") as tmp:
        folders = {k: io.write_png_folder(Path(tmp) / k, to_uint8(v)) for k, v in sets.items()}
        for name in ("genuine", "regulated"):
            out[name] = {m: f(folders[name], folders["artificial"], net=net, use_cache=False).value
                         for m, f in (("fid", compute_fid), ("kid", compute_kid))}
    out["regulated_closer"] = {m: out["regulated"][m] < out["genuine"][m] for m in ("fid", "kid")}
    out.update(n_genuine=len(sets["genuine"]), n_artificial=len(sets["artificial"]))
    return out
