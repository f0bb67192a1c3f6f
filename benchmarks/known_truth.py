"""Known-truth check of the bicubic-free methods: "genuine" LR faces with a known degradation.

The "genuine" LR training faces are made by the real-world degradation chain
(``lrfb build-dataset degraded``) from HR faces *disjoint* from the HR training set (the embedded
sample's), and fed unpaired, as WIDER FACE crops would be. The test faces are other HR faces of
the same pool with the chain at another seed, so every SR output has its true HR face. A method
that learns the degradation must then beat phi_sr trained on DS pairs alone, and bicubic.

    python scripts/make_sample.py --shared ../shared/data --all-licences --out /tmp/lrfb-dev
    python benchmarks/known_truth.py --pool /tmp/lrfb-dev --out /tmp/kt --seeds 0,1,2 \
        --sr-opt sr_iterations=600 --cr-variant cpu \
        --cr-variant noise:tilde_noise=2,tilde_identity_l1=0,tilde_lowpass_l1=10
    python benchmarks/known_truth.py --pool /tmp/lrfb-dev --out /tmp/kt --no-cr   # LRGAN, CycleGAN alone
    python benchmarks/known_truth.py --pool /tmp/lrfb-dev --out /tmp/kt --no-cr --cr-full \
        --sr-opt sr_iterations=600                                   # + CR with stage 2, one run per seed
    python benchmarks/known_truth.py --pool /tmp/lrfb-dev --out /tmp/kt --no-cr --seeds 0 --methods "" \
        --sr-opt sr_iterations=600 --stage2-variant lsr:lambda_cr=0,lambda_cr_sr=0,lambda_cr_gan=0
                                                                     # + stage 2 with L_sr alone

Steps (each skipped when its output exists, so a killed run resumes):
1. split the pool's HR faces that are not in the sample, by a hash of the file name, into
   ``hr_train`` (3/4) and ``hr_test`` (1/4), as folders of links;
2. ``genuine`` = the chain of ``hr_train`` at seed 1 (training LR), ``test`` = the chain of
   ``hr_test`` at seed 0 (the paired test set);
3. the recogniser: CentreFace phi_fr trained on the sample's HR identities only (as Table 2's
   independent recogniser); no method is trained against it;
4. per seed: one ``sr-s{seed}`` run, CR's stage1_sr alone (phi_sr on DS pairs), and for each CR
   variant (``--cr-variant``, default ``cpu``: the preset as it is) one ``cr-{variant}-s{seed}``
   run, CR's stage1_cc alone (phi_cr, phi~_cr, D, D~ on the genuine faces). Stage 1's parts do
   not interact, so ``CR = phi_sr(phi_cr(x))`` with the seed's phi_sr is CR ``wo_srri`` (stage 1
   only), and every variant and "phi_sr alone" = phi_sr(x) share that phi_sr: the deltas
   between them are phi_cr's alone. ``--methods`` (default ``lrgan,cyclegan``) are trained whole
   with ``--preset``;
   With ``--cr-full``, also one ``crfull-s{seed}`` run of CR's whole ``cpu`` preset (stage 2
   included; ``--sr-opt`` applies): rows ``cr_full:phi_sr`` (its phi_sr alone after stage 1),
   ``cr_full:stage1`` (phi_sr(phi_cr(x)) after stage 1, i.e. ``wo_srri``) and ``cr_full:stage2``
   (the finished run), so stage 2's effect is measured face for face within one run, and the
   crossings ``cr_full:sr2_cr1`` (stage-2 phi_sr on stage-1 phi_cr) and ``cr_full:sr1_cr2``
   (stage-1 phi_sr on stage-2 phi_cr), which split that effect between the two nets. Each
   ``--stage2-variant NAME:KEY=VALUE,...`` adds a ``crfull-NAME-s{seed}`` run with those overrides
   (rows ``cr_full.NAME:...``); overrides of stage 2 only leave stage 1 as ``crfull-s{seed}``'s
   (same seed, same feeder), which its ``stage1`` delta to ``cr_full:stage1`` shows;
5. a ceiling no unpaired method can pass: ``oracle_phi_cr``, phi_cr's network trained supervised
   on the *true* pairs (genuine LR -> DS(HR)) of the training faces, then each seed's phi_sr;
6. per face: Y-PSNR, identity cosine, LR consistency |DS(SR) - x|, and Y-PSNR on artificial LR
   (``psnr_y_artificial``: SR of DS(HR) of the same test faces, Table 3's input); for CR also the LR
   restoration PSNR(phi_cr(x), DS(HR)) against PSNR(x, DS(HR)) (row ``input``). Paired bootstrap deltas
   (1,000 resamples over test faces) per seed, and pooled: the per-face mean over seeds.

Writes ``OUT/known_truth.csv`` (long format) and ``OUT/known_truth.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lrfacebench import io
from lrfacebench.bench.data import paired_set
from lrfacebench.data.sources.sample import default_root
from lrfacebench.degrade import downsample
from lrfacebench.metrics import bootstrap
from lrfacebench.metrics.identity import identity_cosine, lr_consistency
from lrfacebench.metrics.psnr_ssim import measure_tensors, psnr
from lrfacebench.methods import get_method
from lrfacebench.nn.cr import PhiCR
from lrfacebench.pixels import quantise, signed_to_unit, to_unit_float, unit_to_signed
from lrfacebench.runs import list_checkpoints, load_method, load_recognizer

RECOGNIZER = ["cr", "--preset", "cpu", "-o", "sr_iterations=0", "-o", "use_cr=false",
              "-o", "joint_finetune=false", "--hr", "@sample", "--seed", "1001"]
METRICS = ("psnr_y", "identity_cos", "lr_consistency")


def lrfb(*args: str) -> None:
    print("+ lrfb", " ".join(args), flush=True)
    subprocess.run(["lrfb", *args], check=True)


def split_pool(pool: Path, out: Path) -> tuple[Path, Path]:
    """Links to the pool's HR faces (``pool/hr`` of ``make_sample.py``) that are not in the sample:
    ``out/hr_train`` and ``out/hr_test`` (1 in 4 by a SHA-1 of the file name)."""
    train, test = out / "hr_train", out / "hr_test"
    if train.is_dir() and test.is_dir():
        return train, test
    sample = {p.name for p in (default_root() / "hr").rglob("*") if p.is_file()}
    files = [p for p in io.list_images(pool / "hr") if p.name not in sample]
    if not files:
        raise SystemExit(f"{pool}/hr holds no HR faces outside the sample; build it with scripts/make_sample.py")
    for folder in (train, test):
        folder.mkdir(parents=True, exist_ok=True)
    for p in files:
        dest = test if int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 4 == 0 else train
        (dest / p.name).symlink_to(p.resolve())
    return train, test


def build_sets(out: Path, hr_train: Path, hr_test: Path) -> tuple[Path, Path]:
    genuine, test = out / "genuine", out / "test"
    if not (genuine / "manifest.csv").is_file():
        lrfb("build-dataset", "degraded", "--root", str(hr_train), "--out", str(genuine), "--seed", "1",
             "-o", "source.default_split=train")
    if not (test / "manifest.csv").is_file():
        lrfb("build-dataset", "degraded", "--root", str(hr_test), "--out", str(test), "--seed", "0")
    return genuine, test


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` -> (NAME, ["KEY=VALUE", ...]); commas inside
    ``[...]`` belong to an array value (``d_augment=["translation","cutout"]``)."""
    name, _, opts = text.partition(":")
    if not name or any(c in name for c in "/ ="):
        raise SystemExit(f"--cr-variant {text!r}: give NAME or NAME:KEY=VALUE,...")
    return name, [o for o in re.split(r",(?![^\[]*\])", opts) if o]


def _train(run: Path, method: str, args: list[str]) -> Path:
    if not (run / "final.pt").is_file():
        lrfb("train", method, *args, "--out", str(run))
    return run


def full_row(name: str) -> str:
    """Row prefix of a whole-CR variant: ``cr_full`` for the ``cpu`` preset, else ``cr_full.NAME``."""
    return "cr_full" if name == "cpu" else f"cr_full.{name}"


def train_runs(out: Path, genuine: Path, seeds: list[int], methods: list[str], preset: str,
               sr_opts: list[str], variants: dict[str, list[str]], cr_full: dict[str, list[str]] | None = None
               ) -> dict[tuple[str, int], Path]:
    """``{(row, seed): run}`` with rows ``sr`` (phi_sr alone), ``cr:NAME`` per variant (phi_cr
    alone), per ``cr_full`` variant ``{NAME: overrides}`` one :func:`full_row` (CR's whole ``cpu``
    preset with ``sr_opts`` and the overrides, stage 2 included, every stage's end checkpoint kept)
    and each of ``methods``; every seed of a row before the next row. No ``variants``: no ``sr`` or
    ``cr:NAME`` rows."""
    common = ["--hr", "@sample", "--lr", str(genuine)]
    cr = ["--preset", "cpu", "--variant", "wo_srri", "-o", "fr_iterations=0"]
    runs = {}
    for seed in seeds if variants else ():
        runs["sr", seed] = _train(out / "runs" / f"sr-s{seed}", "cr", [
            *cr, "-o", "cc_iterations=0", *[a for o in sr_opts for a in ("-o", o)], *common, "--seed", str(seed)])
    for name, opts in variants.items():
        for seed in seeds:
            runs[f"cr:{name}", seed] = _train(out / "runs" / f"cr-{name}-s{seed}", "cr", [
                *cr, "-o", "sr_iterations=0", *[a for o in opts for a in ("-o", o)], *common, "--seed", str(seed)])
    for name, opts in (cr_full or {}).items():
        for seed in seeds:
            runs[full_row(name), seed] = _train(out / "runs" / f"crfull{'' if name == 'cpu' else '-' + name}-s{seed}", "cr", [
                "--preset", "cpu", *[a for o in (*sr_opts, *opts) for a in ("-o", o)],
                "-o", "engine.keep_stage_checkpoints=true", *common, "--seed", str(seed)])
    for method in methods:
        for seed in seeds:
            runs[method, seed] = _train(out / "runs" / f"{method}-s{seed}", method,
                                        ["--preset", preset, *common, "--seed", str(seed)])
    return runs


def train_oracle(genuine: Path, out: Path, iterations: int = 1000, lr: float = 1e-3) -> PhiCR:
    """PhiCR trained by MSE on the true pairs of the training faces, ``lr16 -> DS(hr64)`` in
    [-1,1] (Adam, batch 16, seed 0); saved to ``out/oracle_phi_cr.pt`` and reused."""
    net, path = PhiCR(), out / "oracle_phi_cr.pt"
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    pairs = paired_set("genuine", genuine)
    x = unit_to_signed(to_unit_float(pairs.lr.images))
    y = unit_to_signed(quantise(downsample(to_unit_float(pairs.faces.images))))
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr)
    for _ in range(iterations):
        i = torch.randint(len(x), (16,), generator=gen)
        loss = F.mse_loss(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), path)
    return net.eval()


def _lr_psnr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-face RGB PSNR (dB) of ``(N,3,16,16)`` images in [0,1] (``a`` need not be quantised)."""
    return np.array([psnr(x.numpy() * 255, y.numpy() * 255) for x, y in zip(a, b)])


def per_face(sr: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor, embed) -> dict[str, np.ndarray]:
    """The three per-face metrics of SR ``(N,3,64,64)`` in [0,1], quantised as stored outputs are."""
    sr = quantise(sr)
    return {"psnr_y": np.array([m["psnr_y"] for m in measure_tensors(sr, hr).per_image]),
            "identity_cos": identity_cosine(embed, sr, hr), "lr_consistency": lr_consistency(sr, lr)}


def artificial_psnr(sr: torch.Tensor, hr: torch.Tensor) -> dict[str, np.ndarray]:
    """Y-PSNR of SR ``(N,3,64,64)`` in [0,1] of DS(HR) (Table 3's input, not the chain's)."""
    return {"psnr_y_artificial": np.array([m["psnr_y"] for m in measure_tensors(quantise(sr), hr).per_image])}


def stage_rows(run: Path, hr: torch.Tensor, lr: torch.Tensor, clean: torch.Tensor, embed) -> dict[str, dict]:
    """Rows of one whole-CR run, from the nets at the end of stage 1 and after stage 2: ``phi_sr``
    (stage-1 phi_sr alone), ``stage1`` (CR ``wo_srri``), ``stage2`` (the finished run), and the
    two crossings that split stage 2's effect between its nets: ``sr2_cr1`` (stage-2 phi_sr on
    stage-1 phi_cr(x)) and ``sr1_cr2`` (stage-1 phi_sr on stage-2 phi_cr(x)). ``lr``, ``clean``
    ``(N,3,16,16)``, ``hr`` ``(N,3,64,64)``, all in [0,1]."""
    ends = [p for _, p in list_checkpoints(run) if p.name.endswith("_stage1_cc_done.pt")]
    if not ends:
        raise SystemExit(f"{run}: no stage1_cc end checkpoint (train it with -o engine.keep_stage_checkpoints=true)")
    nets = {1: load_method(ends[0], "cpu").nets, 2: load_method(run, "cpu").nets}
    phi_sr = {k: n["phi_sr"].eval() for k, n in nets.items()}
    x = unit_to_signed(lr)
    restored = {None: x, **{k: n["phi_cr"].eval()(x) for k, n in nets.items()}}
    on_clean = {k: artificial_psnr(signed_to_unit(net(unit_to_signed(clean))).clamp(0, 1), hr) for k, net in phi_sr.items()}
    lr_restoration = {k: _lr_psnr(signed_to_unit(r).clamp(0, 1), clean) for k, r in restored.items() if k is not None}
    out = {}
    for name, sr_at, cr_at in (("phi_sr", 1, None), ("stage1", 1, 1), ("stage2", 2, 2), ("sr2_cr1", 2, 1),
                               ("sr1_cr2", 1, 2)):
        sr = signed_to_unit(phi_sr[sr_at](restored[cr_at])).clamp(0, 1)
        out[name] = {**per_face(sr, hr, lr, embed), **on_clean[sr_at]}
        if cr_at is not None:
            out[name]["lr_restoration_psnr"] = lr_restoration[cr_at]
    return out


def evaluate(runs: dict[tuple[str, int], Path], test_dir: Path, embed, oracle: PhiCR | None
             ) -> dict[tuple[str, int], dict]:
    """``{(row, seed): {metric: (N,) values}}``; seed -1 for the untrained rows. Rows: bicubic,
    the sanity rows bicubic_noise and nearest, input (LR restoration only), phi_sr (the seed's
    ``sr`` run), each ``cr:NAME`` (its phi_cr, then the seed's phi_sr), oracle_phi_cr, and the
    whole-method rows."""
    test = paired_set("known-truth", test_dir)
    hr, lr = to_unit_float(test.faces.images), to_unit_float(test.lr.images)
    clean = quantise(downsample(hr))
    values = {}

    for name in ("bicubic", "bicubic_noise", "nearest"):
        method = get_method(name)(get_method(name).Config())
        values[name, -1] = {**per_face(method.super_resolve(lr), hr, lr, embed),
                            **artificial_psnr(method.super_resolve(clean, artificial=True), hr)}
    values["input", -1] = {"lr_restoration_psnr": _lr_psnr(lr, clean)}  # phi_cr = identity

    def with_phi_sr(restored: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
        """Per-face metrics of the seed's phi_sr on ``restored`` ``(N,3,16,16)`` in [-1,1]."""
        sr = signed_to_unit(phi_sr[seed](restored)).clamp(0, 1)
        row = per_face(sr, hr, lr, embed)
        row["lr_restoration_psnr"] = _lr_psnr(signed_to_unit(restored).clamp(0, 1), clean)
        return row

    # oracle is None only when runs has no ``sr`` row (--no-cr)
    phi_sr = {seed: load_method(run, "cpu").nets["phi_sr"].eval() for (row, seed), run in runs.items() if row == "sr"}
    with torch.no_grad():
        for (row, seed), run in runs.items():
            if row == "sr":
                values["phi_sr", seed] = with_phi_sr(unit_to_signed(lr), seed)
                del values["phi_sr", seed]["lr_restoration_psnr"]  # the input's: row "input" has it
                # CR on artificial LR is phi_sr alone (it skips phi_cr)
                values["phi_sr", seed].update(artificial_psnr(signed_to_unit(phi_sr[seed](unit_to_signed(clean))).clamp(0, 1), hr))
                values["oracle_phi_cr", seed] = with_phi_sr(oracle(unit_to_signed(lr)), seed)
            elif row.startswith("cr:"):
                phi_cr = load_method(run, "cpu").nets["phi_cr"].eval()
                values[row, seed] = with_phi_sr(phi_cr(unit_to_signed(lr)), seed)
            elif row.startswith("cr_full"):
                values.update({(f"{row}:{k}", seed): v for k, v in stage_rows(run, hr, lr, clean, embed).items()})
            else:
                method = load_method(run, "cpu")
                values[row, seed] = {**per_face(method.super_resolve(lr), hr, lr, embed),
                                     **artificial_psnr(method.super_resolve(clean, artificial=True), hr)}
    return values


def deltas(values: dict, seeds: list[int], pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Long table: per seed and pooled (seed ``all``: per-face mean over the seeds) value of every
    row and metric, with the paired bootstrap delta to ``ref`` for each (row, ref) in ``pairs``."""
    n = len(values["bicubic", -1]["psnr_y"])
    w = bootstrap.weights(n)

    def get(row: str, seed: int | str, metric: str) -> np.ndarray | None:
        if (row, -1) in values:  # untrained rows are the same at every seed
            return values[row, -1].get(metric)
        got = [values[row, s][metric] for s in seeds
               if (seed == "all" or s == seed) and metric in values.get((row, s), {})]
        return np.mean(got, axis=0) if got else None

    rows = []
    for seed in [*seeds, "all"]:
        for metric in (*METRICS, "lr_restoration_psnr", "psnr_y_artificial"):
            for row, ref in pairs:
                a, b = get(row, seed, metric), get(ref, seed, metric)
                if a is None or b is None:
                    continue
                d = bootstrap.paired_delta(float(a.mean()), float(b.mean()), bootstrap.mean_replicates(a, w),
                                           bootstrap.mean_replicates(b, w))
                rows.append({"seed": seed, "metric": metric, "method": row, "value": a.mean(), "ref": ref,
                             "ref_value": b.mean(), "delta": d.value, "ci_low": d.low, "ci_high": d.high,
                             "significant": d.significant, "n_faces": n})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| seed | metric | method | value | vs | Δ [95 % CI] |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        star = "*" if r.significant else ""
        lines.append(f"| {r.seed} | {r.metric} | {r.method} | {r.value:.4g} | {r.ref} {r.ref_value:.4g} | "
                     f"{r.delta:+.4g}{star} [{r.ci_low:+.4g}, {r.ci_high:+.4g}] |")
    n = int(table["n_faces"].iloc[0])
    return ("\n".join(lines) + f"\n\nN = {n} test faces; * = the paired bootstrap interval (1,000 resamples "
            "over faces) excludes 0. Seed `all` = per-face mean over the seeds.\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, required=True, help="output of scripts/make_sample.py (its hr/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="lrgan,cyclegan", help="whole methods to train (comma list; '' for none)")
    ap.add_argument("--preset", default="cpu", help="preset of --methods")
    ap.add_argument("--sr-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="CR config override of the phi_sr runs (repeatable)")
    ap.add_argument("--cr-variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                    help="a CR stage1_cc variant: the cpu preset with these overrides (repeatable; default cpu)")
    ap.add_argument("--no-cr", action="store_true",
                    help="no CR, phi_sr or oracle rows: only --methods against bicubic (a later run without "
                         "this flag in the same --out reuses their runs)")
    ap.add_argument("--cr-full", action="store_true",
                    help="also CR's whole cpu preset (stage 2 included) per seed: rows cr_full:phi_sr, "
                         "cr_full:stage1 (CR wo_srri), cr_full:stage2 and the crossings of the same run")
    ap.add_argument("--stage2-variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="also CR's whole cpu preset with these overrides per seed (repeatable; implies "
                         "--cr-full): rows cr_full.NAME:..., compared with cr_full's")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    variants = {} if args.no_cr else dict(parse_variant(v) for v in (args.cr_variant or ["cpu"]))
    full = dict(parse_variant(v) for v in args.stage2_variant)
    if full or args.cr_full:
        full = {"cpu": [], **full}
    args.out.mkdir(parents=True, exist_ok=True)
    hr_train, hr_test = split_pool(args.pool, args.out)
    genuine, test = build_sets(args.out, hr_train, hr_test)
    rec = args.out / "recognizer"
    if not (rec / "final.pt").is_file():
        lrfb("train", *RECOGNIZER, "--out", str(rec))
    runs = train_runs(args.out, genuine, seeds, methods, args.preset, args.sr_opt, variants, full)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    oracle = None if args.no_cr else train_oracle(genuine, args.out)
    values = evaluate(runs, test, load_recognizer(str(rec), "cpu"), oracle)
    crs = [f"cr:{v}" for v in variants]
    pairs = [("bicubic_noise", "bicubic"), ("nearest", "bicubic")] + [(m, "bicubic") for m in ("phi_sr", *crs, *methods)]
    pairs += [(c, ref) for c in (*crs, "oracle_phi_cr") for ref in ("phi_sr", "input")]
    pairs += [(c, crs[0]) for c in crs[1:]] + [(c, m) for c in crs for m in methods]
    for name in full:
        p = full_row(name)
        stages = (f"{p}:stage1", f"{p}:stage2")
        pairs += [(r, "bicubic") for r in (f"{p}:phi_sr", *stages)] + [(r, f"{p}:phi_sr") for r in stages]
        pairs += [(r, f"{p}:stage1") for r in (f"{p}:stage2", f"{p}:sr2_cr1", f"{p}:sr1_cr2")]
        pairs += [(r, m) for r in stages for m in methods]
        if p != "cr_full":  # the same stage 1 (seeded) unless the overrides reach it
            pairs += [(f"{p}:{k}", f"cr_full:{k}") for k in ("stage1", "stage2")]
    table = deltas(values, seeds, pairs)
    table.to_csv(args.out / "known_truth.csv", index=False)
    (args.out / "known_truth.md").write_text(markdown(table))
    print(markdown(table[table["seed"] == "all"]))


if __name__ == "__main__":
    sys.exit(main())
