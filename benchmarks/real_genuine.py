"""CR on real genuine LR faces (no ground truth): KID and FID of CR, phi_sr alone, bicubic and
the bicubic + noise sanity row against HR faces, and Table 5's direction, with paired bootstrap
intervals over the test faces, per training seed and pooled over seeds; a grid of faces per set.

    lrfb train cr --variant wo_srri --preset cpu -o sr_iterations=600 -o fr_iterations=0 --seed S --out RUN_S
    python benchmarks/real_genuine.py RUN_0 [RUN_1 ...] --genuine sample=DIR [--genuine dev=DIR] \
        --reference DIR --out OUT [--phi-sr SR_RUN_0 --phi-sr SR_RUN_1 ...]

Each ``RUN`` is a CR run of one seed: its phi_sr alone (``phi_sr(x)``) and CR
(``phi_sr(phi_cr(x))``) share one phi_sr. ``--phi-sr`` (one per run, in the same order) takes
phi_sr from another run of that seed, e.g. a stage1_sr-only run beside a stage1_cc-only one:
stage 1's parts do not interact, so the pair is that seed's whole stage-1 run. Genuine sets are
plain folders of LR crops of any size (resized to 16x16 by the project's rule); the reference is
a folder of HR faces (resized to 64x64). Table 5: FID/KID of the regulated LR ``phi_cr(x)`` and
of ``x`` itself against A-LR = DS(reference); CR's phi_cr should bring x closer.

Seed ``all`` pools the runs: its point is the mean over seeds of each metric, its replicates the
mean over seeds of replicates drawn with the same face weights, so the interval is paired over
faces and covers the seeds' mean. Writes ``OUT/real_genuine.csv``, ``OUT/grid-<set>.png`` (the
first run) and every image set it measured under ``OUT/images/``.
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
SR_PAIRS = [("bicubic_noise", "bicubic"), ("phi_sr", "bicubic"), ("cr", "bicubic"), ("cr", "phi_sr")]
TABLE5_PAIRS = [("regulated_lr", "genuine_lr")]
SEEDLESS = {"bicubic", "bicubic_noise", "genuine_lr"}  # rows no training seed changes


def write_set(images: torch.Tensor, folder: Path) -> Path:
    """``(N,3,H,W)`` float images in [0,1] as PNGs ``folder/00000.png ...`` (face i in file i), as
    the benchmark stores every SR output, so FID/KID see the quantised images."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8(images)):
        io.write_png(folder / f"{i:05d}.png", img.permute(1, 2, 0).numpy())
    return folder


def measure(folders: dict[str, Path], reference: Path, w: np.ndarray, net) -> dict[str, dict[str, tuple]]:
    """``{metric: {key: (point, (R,) replicates)}}`` of each folder against ``reference``: FID and
    KID as the benchmark's tables measure them (``compute_fid``/``compute_kid``), replicates over
    the test faces with weights ``w``, reference fixed (features from clean-fid's cache)."""
    ref_feats = folder_features(reference, net).feats
    out: dict[str, dict[str, tuple]] = {"fid": {}, "kid": {}}
    for key, folder in folders.items():
        feats = folder_features(folder, net).feats
        out["fid"][key] = (compute_fid(folder, reference, net=net).value,
                           bootstrap.fid_replicates(feats, ref_feats, w))
        out["kid"][key] = (compute_kid(folder, reference, net=net).value,
                           bootstrap.kid_replicates(feats, ref_feats, w))
    return out


def deltas(scores: dict[str, dict[str, tuple]], pairs: list[tuple[str, str]], seeds: list[int],
           group: str, n_faces: int, n_reference: int) -> list[dict]:
    """Rows per seed and pooled (seed ``all``) of each (row, ref) in ``pairs``; ``scores`` keys are
    ``"row"`` for seedless rows and ``"row@seed"`` otherwise."""
    def get(metric: str, row: str, seed: int | str) -> tuple[float, np.ndarray]:
        if row in SEEDLESS:
            return scores[metric][row]
        got = [scores[metric][f"{row}@{s}"] for s in seeds if seed == "all" or s == seed]
        return float(np.mean([g[0] for g in got])), np.mean([g[1] for g in got], axis=0)

    rows = []
    for seed in [*seeds, "all"] if len(seeds) > 1 else seeds:
        for a, b in pairs:
            for metric in ("kid", "fid"):
                (pa, ra), (pb, rb) = get(metric, a, seed), get(metric, b, seed)
                d = bootstrap.paired_delta(pa, pb, ra, rb)
                rows.append({"group": group, "seed": seed, "metric": metric, "method": a, "value": pa, "ref": b,
                             "ref_value": pb, "delta": d.value, "ci_low": d.low, "ci_high": d.high,
                             "significant": d.significant, "n_faces": n_faces, "n_reference": n_reference})
    return rows


def load_runs(runs: list[Path], phi_sr_runs: list[Path]) -> list:
    """The CR methods of ``runs``, each with phi_sr from the matching ``phi_sr_runs`` entry if given."""
    if phi_sr_runs and len(phi_sr_runs) != len(runs):
        raise SystemExit(f"--phi-sr: give one per run ({len(runs)}), got {len(phi_sr_runs)}")
    methods = [load_method(r, "cpu") for r in runs]
    for method, sr_run in zip(methods, phi_sr_runs):
        method.nets["phi_sr"] = load_method(sr_run, "cpu").nets["phi_sr"].eval()
    return methods


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="CR runs, one per training seed")
    ap.add_argument("--seeds", default=None, help="the runs' seeds, comma list (default: read from each run)")
    ap.add_argument("--phi-sr", type=Path, action="append", default=[], metavar="RUN",
                    help="take phi_sr from this run (one per run, same order)")
    ap.add_argument("--genuine", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    methods = load_runs(args.runs, args.phi_sr)
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
             else [int(io.read_json(r / "env.json")["seed"]) for r in args.runs])
    if len(set(seeds)) != len(seeds) or len(seeds) != len(methods):
        raise SystemExit(f"one distinct seed per run: got {seeds} for {len(methods)} runs")
    net = load_inception()
    sets = args.out / "images"
    ref_hr = to_unit_float(facelib.load_faces(facelib.list_folder(args.reference, "hr")).images)
    ref = write_set(ref_hr, sets / "reference-hr")
    ref_lr = write_set(downsample(ref_hr), sets / "reference-a-lr")  # A-LR of Table 5
    trivial = {n: get_method(n)(get_method(n).Config()) for n in ("bicubic", "bicubic_noise")}
    rows = []
    for spec in args.genuine:
        name, _, folder = spec.partition("=")
        x = to_unit_float(facelib.load_faces(facelib.list_folder(folder, "lr")).images)
        with torch.no_grad():
            sr = {k: m.super_resolve(x) for k, m in trivial.items()}
            lr = {"genuine_lr": x}
            for seed, cr in zip(seeds, methods):
                sr[f"phi_sr@{seed}"] = cr.super_resolve(x, artificial=True)
                sr[f"cr@{seed}"] = cr.super_resolve(x)
                lr[f"regulated_lr@{seed}"] = cr.regulate(x)
        w = bootstrap.weights(len(x))
        n_ref = len(ref_hr)
        sr_scores = measure({k: write_set(v, sets / name / k.replace("@", "-s")) for k, v in sr.items()}, ref, w, net)
        rows += deltas(sr_scores, SR_PAIRS, seeds, f"{name}: SR vs HR reference", len(x), n_ref)
        lr_scores = measure({k: write_set(v, sets / name / k.replace("@", "-s")) for k, v in lr.items()},
                            ref_lr, w, net)
        rows += deltas(lr_scores, TABLE5_PAIRS, seeds, f"{name}: Table 5, LR vs A-LR", len(x), n_ref)
        pick = torch.linspace(0, len(x) - 1, GRID_FACES).long()
        s0 = seeds[0]
        columns = [("genuine LR", x[pick]), ("phi_cr(x)", lr[f"regulated_lr@{s0}"][pick]),
                   *[(k, sr[k][pick]) for k in ("bicubic", "bicubic_noise")],
                   ("phi_sr", sr[f"phi_sr@{s0}"][pick]), ("cr", sr[f"cr@{s0}"][pick])]
        io.write_png(args.out / f"grid-{name}.png", grid_array(columns))
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "real_genuine.csv", index=False)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_rows", 500):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
