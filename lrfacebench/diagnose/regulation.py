"""Table 5 for one run: does phi_cr bring genuine LR closer to artificial LR?

FID and KID, as the benchmark measures them (``compute_fid`` / ``compute_kid``: clean-fid
features of stored, quantised PNGs), of the genuine test faces ``x`` (G-LR) and of the regulated
``phi_cr(x)`` (R-LR), each against the artificial faces A-LR = to_uint8(DS(hr)). CR's phi_cr
should make both smaller. At a few dozen faces either moves by several FID points under
resampling, so the difference R-LR - G-LR comes with its paired bootstrap interval over the
genuine faces (face i of both sets is the same face; the artificial reference stays fixed).
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
from lrfacebench.metrics import bootstrap
from lrfacebench.metrics.fid import compute_fid, compute_kid, folder_features
from lrfacebench.metrics.inception import load_inception


def regulation_report(method: Method, faces: Faces, device: str = "cpu") -> dict[str, Any] | None:
    """``{"genuine": {"fid", "kid"}, "regulated": {...}, "regulated_closer": {"fid": bool, "kid":
    bool}, "delta": {"fid"|"kid": {"value", "low", "high", "significant"}}, "n_genuine",
    "n_artificial"}``; ``delta`` is regulated - genuine with its 95 % paired bootstrap interval
    (1,000 resamples of the genuine faces); None without phi_cr."""
    if "phi_cr" not in method.nets:
        return None
    sets = {"genuine": faces.genuine_test, "regulated": batched(method.regulate, faces.genuine_test, method.device),
            "artificial": faces.artificial}
    net = load_inception("clean", device=device)
    out: dict[str, Any] = {}
    replicates = {"fid": bootstrap.fid_replicates, "kid": bootstrap.kid_replicates}
    w = bootstrap.weights(len(faces.genuine_test))
    reps: dict[str, dict[str, Any]] = {"fid": {}, "kid": {}}
    with tempfile.TemporaryDirectory(prefix="lrfb-table5-") as tmp:
        cache = Path(tmp) / "features"  # each set's features computed once, for all five uses
        folders = {k: io.write_png_folder(Path(tmp) / k, to_uint8(v)) for k, v in sets.items()}
        feats = {k: folder_features(f, net, cache_dir=cache).feats for k, f in folders.items()}
        for name in ("genuine", "regulated"):
            out[name] = {m: f(folders[name], folders["artificial"], net=net, cache_dir=cache).value
                         for m, f in (("fid", compute_fid), ("kid", compute_kid))}
            for m, rep in replicates.items():
                reps[m][name] = rep(feats[name], feats["artificial"], w)
    out["regulated_closer"] = {m: out["regulated"][m] < out["genuine"][m] for m in ("fid", "kid")}
    out["delta"] = {}
    for m in ("fid", "kid"):
        d = bootstrap.paired_delta(out["regulated"][m], out["genuine"][m], reps[m]["regulated"], reps[m]["genuine"])
        out["delta"][m] = {"value": d.value, "low": d.low, "high": d.high, "significant": d.significant}
    out.update(n_genuine=len(sets["genuine"]), n_artificial=len(sets["artificial"]))
    return out
