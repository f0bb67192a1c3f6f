"""Inference cost of every registered method, in one run on one machine (the paper's complexity
comparison: CR 2.7M / 7.5 ms, LRGAN 4.0M / 6.6 ms, CycleGAN 21M / 150 ms on a P100).

Each method is built with its ``paper`` architecture (weights do not change the timing) and timed
on random 16x16 inputs: ms per face at batch 1 (warm-up, median) and faces/s at a large batch.

    python benchmarks/bench_inference.py                   # every method, CPU (and CUDA if present)
    python benchmarks/bench_inference.py --methods cr lrgan --devices cuda --runs 1000
"""
from __future__ import annotations

import argparse

import torch

from lrfacebench.methods import METHODS, get_method
from lrfacebench.metrics.complexity import model_complexity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=sorted(METHODS))
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when unavailable")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=200, help="timed batch-1 runs (the paper protocol uses 1000)")
    ap.add_argument("--big-batch", type=int, default=256)
    args = ap.parse_args()
    devices = [torch.device(d) for d in args.devices.split(",")
               if d != "cuda" or torch.cuda.is_available()]
    print(f"{'method':<10} {'device':<28} {'deployed':>10} {'trained':>10} {'ms/face b1':>11} "
          f"{'faces/s':>9}")
    for device in devices:
        for name in args.methods:
            cls = get_method(name)
            method = cls(cls.make_config("paper"), device).eval()
            c = model_complexity(method.super_resolve, method.parameter_counts(), device, warmup=args.warmup,
                                 n_timed=args.runs, large_batch=args.big_batch, large_repeats=3)
            print(f"{name:<10} {c['device_name'][:28]:<28} {c['params_deployed'] / 1e6:>9.2f}M "
                  f"{c['params_trained'] / 1e6:>9.2f}M {c['ms_per_face']:>11.2f} {c['faces_per_s']:>9.1f}")


if __name__ == "__main__":
    main()
