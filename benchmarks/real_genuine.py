"""CR on real genuine LR faces (no ground truth): KID and FID of CR, phi_sr alone, bicubic and
the bicubic + noise sanity row against HR faces, and Table 5's direction, with paired bootstrap
intervals over the test faces; a grid of faces per set.

    lrfb train cr --variant wo_srri --preset cpu -o sr_iterations=600 -o fr_iterations=0 --out RUN
    python benchmarks/real_genuine.py RUN --genuine sample=DIR [--genuine dev=DIR] --reference DIR --out OUT

``RUN`` is a CR run: its phi_sr alone (``phi_sr(x)``) and CR (``phi_sr(phi_cr(x))``) share one
phi_sr. Genuine sets are plain folders of LR crops of any size (resized to 16x16 by the project's
rule); the reference is a folder of HR faces (resized to 64x64). Table 5: FID/KID of the regulated
LR ``phi_cr(x)`` and of ``x`` itself against A-LR = DS(reference); CR's phi_cr should bring x
closer. Writes ``OUT/real_genuine.csv`` and ``OUT/grid-<set>.png``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lrfacebench import io
from lrfacebench.data import faces as facelib
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.grids import grid_array
from lrfacebench.methods import get_method
from lrfacebench.metrics import bootstrap
from lrfacebench.metrics.fid import folder_features, frechet_distance
from lrfacebench.metrics.inception import load_inception
from lrfacebench.runs import load_method

GRID_FACES = 12


def _features(images: torch.Tensor, net) -> np.ndarray:
    """Inception features of ``(N,3,H,W)`` float images in [0,1], stored as PNGs first (as every
    SR output of the benchmark is), so the features see the quantised images."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, img in enumerate(to_uint8(images)):
            io.write_png(Path(tmp) / f"{i:05d}.png", img.permute(1, 2, 0).numpy())
        return folder_features(tmp, net, use_cache=False).feats


def _fid(f: np.ndarray, ref: np.ndarray) -> float:
    stats = lambda x: (x.astype(np.float64).mean(0), np.cov(x.astype(np.float64), rowvar=False))  # noqa: E731
    return float(frechet_distance(stats(f), stats(ref)))


def compare(feats: dict[str, np.ndarray], ref: np.ndarray, pairs: list[tuple[str, str]], group: str,
            w: np.ndarray) -> list[dict]:
    """FID and KID (unbiased MMD^2) of each row against ``ref``, and the paired bootstrap delta of
    each (row, ref_row) in ``pairs``."""
    kid = {k: bootstrap.kid_replicates(f, ref, np.ones((1, len(f))))[0] for k, f in feats.items()}
    kid_rep = {k: bootstrap.kid_replicates(f, ref, w) for k, f in feats.items()}
    fid = {k: _fid(f, ref) for k, f in feats.items()}
    fid_rep = {k: bootstrap.fid_replicates(f, ref, w) for k, f in feats.items()}
    rows = []
    for a, b in pairs:
        for metric, point, rep in (("kid", kid, kid_rep), ("fid", fid, fid_rep)):
            d = bootstrap.paired_delta(point[a], point[b], rep[a], rep[b])
            rows.append({"group": group, "metric": metric, "method": a, "value": point[a], "ref": b,
                         "ref_value": point[b], "delta": d.value, "ci_low": d.low, "ci_high": d.high,
                         "significant": d.significant, "n_faces": len(feats[a]), "n_reference": len(ref)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--genuine", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    net = load_inception()
    ref_hr = facelib.load_faces(facelib.list_folder(args.reference, "hr")).images.float() / 255
    ref = _features(ref_hr, net)
    ref_lr = _features(to_uint8(downsample(ref_hr)).float() / 255, net)  # A-LR of Table 5
    cr = load_method(args.run, "cpu")
    trivial = {n: get_method(n)(get_method(n).Config()) for n in ("bicubic", "bicubic_noise")}
    rows = []
    for spec in args.genuine:
        name, _, folder = spec.partition("=")
        x = facelib.load_faces(facelib.list_folder(folder, "lr")).images.float() / 255
        with torch.no_grad():
            sr = {"bicubic": trivial["bicubic"].super_resolve(x),
                  "bicubic_noise": trivial["bicubic_noise"].super_resolve(x),
                  "phi_sr": cr.super_resolve(x, artificial=True), "cr": cr.super_resolve(x)}
            regulated = cr.regulate(x)
        w = bootstrap.weights(len(x))
        feats = {k: _features(v, net) for k, v in sr.items()}
        rows += compare(feats, ref, [("bicubic_noise", "bicubic"), ("phi_sr", "bicubic"), ("cr", "bicubic"),
                                     ("cr", "phi_sr")], f"{name}: SR vs HR reference", w)
        lr_feats = {"genuine_lr": _features(x, net), "regulated_lr": _features(regulated, net)}
        rows += compare(lr_feats, ref_lr, [("regulated_lr", "genuine_lr")], f"{name}: Table 5, LR vs A-LR", w)
        pick = torch.linspace(0, len(x) - 1, GRID_FACES).long()
        columns = [("genuine LR", x[pick]), ("phi_cr(x)", regulated[pick])] + [(k, v[pick]) for k, v in sr.items()]
        io.write_png(args.out / f"grid-{name}.png", grid_array(columns))
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "real_genuine.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
