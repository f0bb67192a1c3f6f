"""CR on real genuine LR faces (no ground truth): KID and FID of CR, phi_sr alone, bicubic and
the bicubic + noise sanity row against HR faces, and Table 5's direction, with paired bootstrap
intervals over the test faces; a grid of faces per set.

    lrfb train cr --variant wo_srri --preset cpu -o sr_iterations=600 -o fr_iterations=0 --out RUN
    python benchmarks/real_genuine.py RUN --genuine sample=DIR [--genuine dev=DIR] --reference DIR --out OUT

``RUN`` is a CR run: its phi_sr alone (``phi_sr(x)``) and CR (``phi_sr(phi_cr(x))``) share one
phi_sr. Genuine sets are plain folders of LR crops of any size (resized to 16x16 by the project's
rule); the reference is a folder of HR faces (resized to 64x64). Table 5: FID/KID of the regulated
LR ``phi_cr(x)`` and of ``x`` itself against A-LR = DS(reference); CR's phi_cr should bring x
closer. Writes ``OUT/real_genuine.csv``, ``OUT/grid-<set>.png`` and every image set it measured
under ``OUT/images/``.
"""
from __future__ import annotations

import argparse
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
from lrfacebench.metrics.fid import compute_fid, compute_kid, folder_features
from lrfacebench.metrics.inception import load_inception
from lrfacebench.pixels import to_unit_float
from lrfacebench.runs import load_method

GRID_FACES = 12


def write_set(images: torch.Tensor, folder: Path) -> Path:
    """``(N,3,H,W)`` float images in [0,1] as PNGs ``folder/00000.png ...`` (face i in file i), as
    the benchmark stores every SR output, so FID/KID see the quantised images."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8(images)):
        io.write_png(folder / f"{i:05d}.png", img.permute(1, 2, 0).numpy())
    return folder


def compare(folders: dict[str, Path], reference: Path, pairs: list[tuple[str, str]], group: str,
            w: np.ndarray, net) -> list[dict]:
    """FID and KID of each folder against ``reference`` as the benchmark's tables measure them
    (``compute_fid``/``compute_kid``), and the paired bootstrap delta of each (row, ref_row) in
    ``pairs`` (replicates over the test faces, reference fixed; features from clean-fid's cache)."""
    ref_feats = folder_features(reference, net).feats
    feats = {k: folder_features(f, net).feats for k, f in folders.items()}
    point = {"fid": {k: compute_fid(f, reference, net=net).value for k, f in folders.items()},
             "kid": {k: compute_kid(f, reference, net=net).value for k, f in folders.items()}}
    reps = {"fid": {k: bootstrap.fid_replicates(f, ref_feats, w) for k, f in feats.items()},
            "kid": {k: bootstrap.kid_replicates(f, ref_feats, w) for k, f in feats.items()}}
    rows = []
    for a, b in pairs:
        for metric in ("kid", "fid"):
            d = bootstrap.paired_delta(point[metric][a], point[metric][b], reps[metric][a], reps[metric][b])
            rows.append({"group": group, "metric": metric, "method": a, "value": point[metric][a], "ref": b,
                         "ref_value": point[metric][b], "delta": d.value, "ci_low": d.low, "ci_high": d.high,
                         "significant": d.significant, "n_faces": len(feats[a]), "n_reference": len(ref_feats)})
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
    sets = args.out / "images"
    ref_hr = to_unit_float(facelib.load_faces(facelib.list_folder(args.reference, "hr")).images)
    ref = write_set(ref_hr, sets / "reference-hr")
    ref_lr = write_set(downsample(ref_hr), sets / "reference-a-lr")  # A-LR of Table 5
    cr = load_method(args.run, "cpu")
    trivial = {n: get_method(n)(get_method(n).Config()) for n in ("bicubic", "bicubic_noise")}
    rows = []
    for spec in args.genuine:
        name, _, folder = spec.partition("=")
        x = to_unit_float(facelib.load_faces(facelib.list_folder(folder, "lr")).images)
        with torch.no_grad():
            sr = {"bicubic": trivial["bicubic"].super_resolve(x),
                  "bicubic_noise": trivial["bicubic_noise"].super_resolve(x),
                  "phi_sr": cr.super_resolve(x, artificial=True), "cr": cr.super_resolve(x)}
            regulated = cr.regulate(x)
        w = bootstrap.weights(len(x))
        folders = {k: write_set(v, sets / name / k) for k, v in sr.items()}
        rows += compare(folders, ref, [("bicubic_noise", "bicubic"), ("phi_sr", "bicubic"), ("cr", "bicubic"),
                                       ("cr", "phi_sr")], f"{name}: SR vs HR reference", w, net)
        lr_folders = {"genuine_lr": write_set(x, sets / name / "genuine_lr"),
                      "regulated_lr": write_set(regulated, sets / name / "regulated_lr")}
        rows += compare(lr_folders, ref_lr, [("regulated_lr", "genuine_lr")], f"{name}: Table 5, LR vs A-LR", w, net)
        pick = torch.linspace(0, len(x) - 1, GRID_FACES).long()
        columns = [("genuine LR", x[pick]), ("phi_cr(x)", regulated[pick])] + [(k, v[pick]) for k, v in sr.items()]
        io.write_png(args.out / f"grid-{name}.png", grid_array(columns))
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "real_genuine.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
