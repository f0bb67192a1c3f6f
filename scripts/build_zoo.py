#!/usr/bin/env python3
"""Rebuild the model zoo (``lrfacebench/zoo/models/``) from scratch with one command.

::

    OMP_NUM_THREADS=1 python scripts/build_zoo.py                  # every model, cpu presets
    python scripts/build_zoo.py --only vdsr --only cr              # some models (and what they need)
    python scripts/build_zoo.py --ablations                        # also cr:wo_cr, cr:wo_srri, cr:wo_ul

Per model, in order (the recogniser first: every SR card's identity metric needs it):

1. train it on the embedded sample (HR ``train`` faces, genuine-LR ``train`` crops) with the named
   preset (default each method's ``cpu`` preset) into ``--runs`` (``RUNS/METHOD-VARIANT-PRESET-sSEED``,
   the benchmark's run names); a finished run is reused and an unfinished one resumed, so a killed
   build continues where it stopped;
2. measure the fp16 check (``lrfacebench.zoo.checks``: Y-PSNR gap to fp32 on the held-out artificial
   and degraded sets, <= 0.05 dB ships fp16, else fp32) and write ``NAME.safetensors``;
3. measure the held-out metrics with ``lrfb benchmark``'s own evaluators (Table 3's Y-PSNR/SSIM on
   artificial LR, and the degraded table's fidelity, identity and LR consistency, each next to
   bicubic with a paired bootstrap interval) and the face check, and write the card
   ``NAME.json`` + ``NAME.md``.

A model whose entry already matches its finished run is skipped. Prints each model's training
time, fp16 gap, size and face check; exits 1 when a model fails the face check.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrfacebench import io, zoo
from lrfacebench.bench.config import BenchConfig, load_recognizers
from lrfacebench.bench.data import build_degraded_sample, paired_set
from lrfacebench.bench.harness import Benchmark
from lrfacebench.bench.provenance import RunKey, run_name
from lrfacebench.data.faces import list_sample, load_faces
from lrfacebench.degrade import downsample
from lrfacebench.methods import Method, get_method
from lrfacebench.pixels import quantise, to_unit_float
from lrfacebench.runs import FINAL, export_safetensors, load_method, recognizer_embed, train_seconds
from lrfacebench.training.loop import train
from lrfacebench.zoo import checks
from lrfacebench.zoo.card import sample_licences

SR_MODELS = ("vdsr", "srgan", "cyclegan", "lrgan", "fsrnet", "sicnn", "csri:synthetic", "cr")
ABLATIONS = ("cr:wo_cr", "cr:wo_srri", "cr:wo_ul")
ID_RECOGNIZER = "centreface-independent"  # the degraded table's recogniser (tables.toml)
CARD_TABLES = ("table3", "table_degraded")
LIMITS = [
    "Trained on the embedded sample only (166 HR faces of 24 identities, 346 genuine-LR crops from a few "
    "photos): tiny data, so expect artefacts and weak transfer to other cameras and degradations.",
    "The held-out sets have 62 HR faces and 87 genuine-LR faces: intervals are wide and small differences "
    "are not rankings.",
    "A short preset, far from the paper's schedules: these are not the paper's models or numbers.",
    "Super-resolved faces are plausible images, not evidence: never use them to identify anyone.",
    "Inputs are face crops framed like the sample's (a square around the MTCNN box), resized to 16x16.",
]
USE_SR = ("Super-resolving genuine low-resolution face crops (16x16 -> 64x64) for research on face "
          "super-resolution and low-resolution face recognition, the `lrfb benchmark` demo, and a starting "
          "point for fine-tuning (`lrfb train METHOD --init zoo`).")
USE_RECOGNIZER = ("Features for the benchmark's identity metrics (Table 2's rank-1, the degraded table's identity "
                  "cosine) on 64x64 faces; not a face recogniser for people.")


@dataclasses.dataclass(frozen=True)
class Target:
    """A zoo model to build: its entry name, kind, the run it comes from, and a recogniser's net."""

    name: str
    kind: str
    key: RunKey
    net: str = ""


def targets(only: list[str], ablations: bool) -> list[Target]:
    """The models to build, in build order: the degraded table's recogniser first (every SR card's
    identity metric needs it, so it is built whenever the zoo lacks it), the SR methods, the other
    recognisers (from runs already trained), then the ablations when asked for or named."""
    recs = load_recognizers()

    def recognizer(name: str) -> Target:
        spec = recs[name]
        return Target(spec.get("zoo", name), "recognizer",
                      RunKey(spec["run"], spec.get("variant", "default"), spec.get("seed_offset", 0),
                             tuple(spec.get("overrides", ())), spec.get("zoo", name)), spec["net"])

    every = ([recognizer(ID_RECOGNIZER)] + [Target(m, "sr", RunKey.parse(m)) for m in SR_MODELS]
             + [recognizer(n) for n in recs if n != ID_RECOGNIZER] + [Target(m, "sr", RunKey.parse(m)) for m in ABLATIONS])
    unknown = set(only) - {t.name for t in every}
    if unknown:
        raise SystemExit(f"unknown zoo model(s) {sorted(unknown)}; known: {', '.join(t.name for t in every)}")
    wanted = set(only) or {t.name for t in every if ablations or t.name not in ABLATIONS}
    if wanted - {ID_RECOGNIZER} and not zoo.has(ID_RECOGNIZER):
        wanted.add(ID_RECOGNIZER)
    return [t for t in every if t.name in wanted]


def ensure_run(t: Target, preset: str, seed: int, runs: Path, device: str) -> tuple[Path, float]:
    """The finished run of ``t`` (trained or resumed now); and the wall seconds spent on it now."""
    out = runs / run_name(t.key, preset, seed)
    if (out / FINAL).is_file():
        return out, 0.0
    print(f"[{t.name}] training {t.key.label} ({preset}) -> {out}", flush=True)
    t0 = time.perf_counter()
    train(t.key.method, preset, variant=t.key.variant, out=out, seed=seed + t.key.seed_offset, device=device,
          # a checkpoint every 200 steps: a killed build loses minutes, not an hour (CR's stage 1 SR
          # is 2000 steps); only the newest end-of-stage one is kept
          overrides=t.key.overrides + ("engine.keep_stage_checkpoints=false", "engine.checkpoint_every=200"),
          resume=out.is_dir() and any(out.iterdir()))
    return out, time.perf_counter() - t0


class HeldOut:
    """The sample's held-out faces the checks use, decoded once: artificial LR of the test HR faces,
    the degraded paired set, and the genuine-LR test crops; all float in [0,1] on the CPU."""

    def __init__(self, bench_out: Path) -> None:
        hr = to_unit_float(load_faces(list_sample("hr", ("test",))).images)  # (62,3,64,64)
        degraded = paired_set("sample-degraded", build_degraded_sample(bench_out / "data" / "sample-degraded"))
        self.sets = {"sample-hr (artificial LR)": (quantise(downsample(hr)), hr, True),
                     "sample-degraded": (to_unit_float(degraded.lr.images), to_unit_float(degraded.faces.images), False)}
        self.hr = hr
        self.genuine = to_unit_float(load_faces(list_sample("lr", ("test",))).images)  # (87,3,16,16)


def fp16_check(t: Target, method: Method, held: HeldOut) -> tuple[bool, float, str]:
    """(ships fp16, gap, sentence for the card): an SR model's largest Y-PSNR gap in dB over the
    held-out sets, a recogniser's smallest feature cosine on the held-out HR faces."""
    nets = [t.net] if t.kind == "recognizer" else list(method.deployed)
    half = checks.fp16_rounded(method, nets)
    if t.kind == "recognizer":
        cos = checks.min_feature_cosine(recognizer_embed(method, t.net, t.name), recognizer_embed(half, t.net, t.name),
                                        held.hr)
        ok = cos >= checks.FP16_MIN_COSINE
        return ok, cos, (f"smallest fp16-vs-fp32 feature cosine on the 62 held-out HR faces {cos:.6f} "
                         f"({'>=' if ok else '<'} {checks.FP16_MIN_COSINE}): stored {'fp16' if ok else 'fp32'}")
    gaps = {name: checks.psnr_gap_db(method, half, lr, hr, artificial) for name, (lr, hr, artificial) in held.sets.items()}
    gap = max(gaps.values())
    ok = gap <= checks.FP16_MAX_GAP_DB
    return ok, gap, ("fp16-vs-fp32 mean Y-PSNR gap " + ", ".join(f"{v:.4f} dB on {k}" for k, v in gaps.items())
                     + f" ({'<=' if ok else '>'} {checks.FP16_MAX_GAP_DB} dB): stored {'fp16' if ok else 'fp32'}")


def card_metrics(name: str, method_name: str, bench_out: Path, device: str) -> list[dict[str, Any]]:
    """The model's rows of Table 3 and the degraded table from ``lrfb benchmark`` (zoo weights),
    each with bicubic's value and the paired bootstrap interval of the difference."""
    rows = Benchmark(BenchConfig(tables=CARD_TABLES, methods=(method_name, "bicubic"), out=str(bench_out),
                                 device=device)).run()
    mine = [r for r in rows if r.source == "reproduced" and r.run_id == f"zoo:{name}"]
    bicubic = {(r.table, r.dataset, r.metric): r.value for r in rows if r.method == "bicubic"}
    return [{"table": r.table, "dataset": r.dataset, "metric": r.metric, "n": r.n_images, "value": r.value,
             "std": r.std, "bicubic": bicubic.get((r.table, r.dataset, r.metric)), "delta": r.delta,
             "ci_low": r.delta_ci_low, "ci_high": r.delta_ci_high, "higher_is_better": r.higher_is_better,
             "protocol": r.protocol} for r in mine if r.metric in ("psnr_y", "ssim_y", "identity_cos", "lr_consistency")]


def training_record(run: Path) -> dict[str, Any]:
    env = io.read_json(run / "env.json")
    return {"run": run.name, "seconds": train_seconds(run), "device": env.get("device", ""),
            "torch_threads": env.get("torch_threads"), "started": env.get("started", ""),
            "commit": env.get("git_sha") or "", "lrfacebench": env.get("lrfacebench", ""), "torch": env.get("torch", ""),
            "sessions": 1 + len(env.get("sessions", []))}


def data_record(method: Method, run: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The training streams the method's stages use (from the run's env.json) and their licences."""
    needs = {n for st in method.stages() for n in st.needs}
    kinds = [k for k, used in (("hr", needs & {"hr", "identity", "lr_artificial"}), ("lr", "lr_genuine" in needs)) if used]
    data = io.read_json(run / "env.json")["data"]
    names = [n for k in kinds for n in list_sample(k, tuple(data[k]["splits"])).names]
    return {k: data[k] for k in kinds}, sample_licences(names)


def build(t: Target, args: argparse.Namespace, held: HeldOut) -> dict[str, Any]:
    """Train, export and card one model; returns its summary line's values."""
    run, wall = ensure_run(t, args.preset, args.seed, args.runs, args.device)
    final_sha = io.sha256_file(run / FINAL)
    old = zoo.entries(args.zoo).get(t.name)
    if (old is not None and old.card.get("complete") and old.card.get("source_sha256") == final_sha
            and old.card.get("preset") == args.preset and old.path.is_file() and io.sha256_file(old.path) == old.sha256):
        print(f"[{t.name}] up to date ({old.path.name}, from {run.name})", flush=True)
        return {**old.card, "wall": wall}
    method = load_method(run, "cpu", nets="all" if t.kind == "recognizer" else "deployed")
    ok16, gap, fp16_text = fp16_check(t, method, held)
    weights = args.zoo / f"{zoo.stem(t.name)}.safetensors"
    nets = [t.net] if t.kind == "recognizer" else list(method.deployed)
    export_safetensors(method, weights, t.key.method, nets, torch.float16 if ok16 else torch.float32)
    data, licences = data_record(method, run)
    cls = get_method(t.key.method)
    card: dict[str, Any] = {
        "name": t.name, "method": t.key.method, "variant": method.config.variant, "kind": t.kind, "net": t.net,
        "nets": nets, "weights": weights.name, "sha256": io.sha256_file(weights), "bytes": weights.stat().st_size,
        "dtype": "float16" if ok16 else "float32", "fp16_gap": gap, "fp16_check": fp16_text,
        "summary": (f"{cls.summary}." if t.kind == "sr" else
                    f"The {t.net} recogniser of a {t.key.label} run (tables.toml recogniser {t.name!r})."),
        "preset": args.preset, "seed": args.seed + t.key.seed_offset, "overrides": list(t.key.overrides),
        "config_hash": io.load_checkpoint(run / FINAL)["config_hash"],
        "parameters": sum(p.numel() for n in nets for p in method.nets[n].parameters()),
        "source_sha256": final_sha, "training": training_record(run), "data": data, "licences": licences,
        "metrics": [], "bicubic_ssim": None, "complete": t.kind == "recognizer",
        "intended_use": USE_SR if t.kind == "sr" else USE_RECOGNIZER, "limits": LIMITS}
    zoo.write_entry(card, args.zoo)  # loadable now: the benchmark below evaluates this very file
    if t.kind == "sr":
        ssim = checks.bicubic_ssim(zoo.load(t.name), held.genuine)
        card["bicubic_ssim"] = {"median": float(np.median(ssim)), "n": len(ssim), "threshold": checks.SSIM_THRESHOLD,
                                "set": "sample genuine_lr test crops"}
        card["metrics"] = card_metrics(t.name, t.key.method, args.bench_out, args.device)
        card["complete"] = True
        zoo.write_entry(card, args.zoo)
    return {**card, "wall": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", help="training preset of every model (default: cpu)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="build only these (repeatable)")
    ap.add_argument("--ablations", action="store_true", help="also the CR variants of Tables 4, 6 and 7")
    ap.add_argument("--runs", type=Path, default=Path("zoo-runs"), help="training runs (reused, resumed)")
    ap.add_argument("--bench-out", type=Path, default=None, help="benchmark caches (default RUNS/bench)")
    ap.add_argument("--zoo", type=Path, default=zoo.MODELS_DIR, help="where the zoo files go")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.bench_out = args.bench_out or args.runs / "bench"
    if args.zoo.resolve() != zoo.MODELS_DIR:
        zoo.MODELS_DIR = args.zoo.resolve()  # the benchmark reads the zoo being built
    todo = targets(args.only, args.ablations)
    print("building: " + ", ".join(t.name for t in todo), flush=True)
    held = HeldOut(args.bench_out)
    done = [build(t, args, held) for t in todo]
    print(f"\n{'model':<24} {'train min':>9} {'this session':>12} {'fp16 check':>16} {'dtype':<8} {'MB':>6} {'ssim~bic':>8}")
    failed = []
    for c in done:
        ssim = (c.get("bicubic_ssim") or {}).get("median")
        passed = ssim is None or ssim >= checks.SSIM_THRESHOLD
        failed += [] if passed else [c["name"]]
        check = f"cos {c['fp16_gap']:.6f}" if c["kind"] == "recognizer" else f"{c['fp16_gap']:.4f} dB"
        print(f"{c['name']:<24} {c['training']['seconds'] / 60:>9.1f} {c['wall'] / 60:>10.1f} m {check:>16} "
              f"{c['dtype']:<8} {c['bytes'] / 1e6:>6.2f} {'' if ssim is None else f'{ssim:.3f}':>8}"
              f"{'' if passed else '  FAILS the face check'}")
    total = sum(p.stat().st_size for p in zoo.MODELS_DIR.glob("*") if p.is_file())
    print(f"zoo: {len(zoo.entries())} model(s), {total / 1e6:.1f} MB in {zoo.MODELS_DIR}")
    missing = [m for m in SR_MODELS if not zoo.has(m)]
    if missing:
        print("not in the zoo yet: " + ", ".join(missing))
    print(f"training time of this build's models: {statistics.fsum(c['training']['seconds'] for c in done) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
