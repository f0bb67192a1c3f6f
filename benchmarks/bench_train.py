"""Training and inference throughput of one method, with achieved GFLOP/s against the measured conv peak.

For each device (this CPU, and CUDA when available) it prints:
  * the conv peak: a large conv2d timed in this run (fp32, which cuDNN runs as TF32 on CUDA by
    default; on CUDA also bf16), GFLOP/s;
  * per training stage: images/s (= steps x per-stream batch / s), ms per step and achieved
    GFLOP/s (FLOPs of one step, forward + backward, counted with FlopCounterMode), under the
    engine's own step settings (bf16 autocast and channels_last on CUDA);
  * inference (``super_resolve`` of genuine LR, fp32, eval): ms per face at batch 1 (warm,
    median) and faces/s at batch 256, with achieved GFLOP/s.

Networks are freshly initialised (speed does not depend on the weights); data are the embedded
sample's real faces through the trainer's Feeder.

    python benchmarks/bench_train.py                      # cr, paper config, cpu (+cuda)
    python benchmarks/bench_train.py --method vdsr --devices cpu --steps 3
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from lrfacebench.data.faces import list_sample, load_faces
from lrfacebench.methods import resolve_method
from lrfacebench.training.feeder import Feeder
from lrfacebench.training.loop import prepare_nets, step_context
from lrfacebench.training.samples import inference_mode
from lrfacebench.training.spec import EngineConfig


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, runs: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_peak(device: torch.device, dtype: torch.dtype) -> float:
    """GFLOP/s of a large 3x3 conv2d (the machine's practical conv peak for this dtype)."""
    n, c, s = (8, 128, 64) if device.type == "cpu" else (64, 256, 128)
    x = torch.randn(n, c, s, s, device=device, dtype=dtype)
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, dtype)
    if device.type == "cuda":
        x, conv = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    with torch.no_grad():
        t = statistics.median(timed(lambda: conv(x), device, runs=5, warmup=2))
    return 2 * n * c * c * 9 * s * s / t / 1e9


def bench_device(args: argparse.Namespace, device: torch.device) -> None:
    cls = resolve_method(args.method)
    hr, lr = load_faces(list_sample("hr")), load_faces(list_sample("lr", ("all",)))
    cfg = cls.make_config(args.preset, args.variant, {"n_identities": hr.n_identities})
    torch.manual_seed(0)
    method = cls(cfg, device)
    engine = EngineConfig(compile=args.compile)
    channels_last = prepare_nets(method, engine)
    feeder = Feeder(hr, lr, device, seed=0, channels_last=channels_last, hflip=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n== {args.method} ({args.preset}/{args.variant}) on {device} [{name}]")
    # cuDNN runs fp32 convs on TF32 tensor cores unless told not to (PyTorch's default)
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    peaks = {"fp32 (as TF32)" if tf32 else "fp32": conv_peak(device, torch.float32)}
    if device.type == "cuda":
        peaks["bf16"] = conv_peak(device, torch.bfloat16)
    print("conv peak: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peaks.items()))
    counts = method.parameter_counts()
    print(f"parameters: deployed {counts['deployed']:,}, trained {counts['trained']:,}")

    for si, stage in enumerate(method.stages()):
        counter = itertools.count()

        def one_step() -> None:
            i = next(counter)
            batch = feeder.batch(stage, si, i)
            with step_context(device, engine):
                method.train_step(stage.name, batch, i)

        per_step = flops(one_step)
        t = timed(one_step, device, runs=args.steps, warmup=args.warmup)
        sec = statistics.median(t)
        print(f"train {stage.name:<12} batch {stage.batch_size:>3}/stream  {stage.batch_size / sec:9.1f} img/s  "
              f"{sec * 1e3:8.1f} ms/step  {per_step / sec / 1e9:9.1f} GFLOP/s  ({per_step / 1e9:.2f} GFLOP/step)")

    face = (lr.images[:1].float() / 255).to(device)
    big = (lr.images[torch.arange(args.big_batch) % len(lr)].float() / 255).to(device)
    with inference_mode(method):
        f1 = flops(lambda: method.super_resolve(face))
        t1 = statistics.median(timed(lambda: method.super_resolve(face), device, runs=args.runs, warmup=20))
        tb = statistics.median(timed(lambda: method.super_resolve(big), device, runs=3, warmup=1))
    print(f"infer batch 1: {t1 * 1e3:.2f} ms/face (median of {args.runs}), {f1 / t1 / 1e9:.1f} GFLOP/s "
          f"({f1 / 1e9:.3f} GFLOP/face)")
    print(f"infer batch {args.big_batch}: {args.big_batch / tb:,.0f} faces/s, {f1 * args.big_batch / tb / 1e9:.1f} GFLOP/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="cr", help="registered method or module:Class (default cr)")
    ap.add_argument("--preset", default="paper", help="config preset; batch sizes come from it (default paper)")
    ap.add_argument("--variant", default="default")
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when unavailable")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per stage")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps per stage")
    ap.add_argument("--runs", type=int, default=200, help="timed batch-1 inference runs")
    ap.add_argument("--big-batch", type=int, default=256)
    ap.add_argument("--compile", action="store_true", help="torch.compile the nets (as engine.compile)")
    args = ap.parse_args()
    for d in args.devices.split(","):
        if d.startswith("cuda") and not torch.cuda.is_available():
            print(f"\n== {d}: not available, skipped")
            continue
        bench_device(args, torch.device(d))


if __name__ == "__main__":
    main()
