"""Model complexity: parameter counts and inference speed, with the device named.

Protocol (methods.md §4): parameters of the deployed modules and of all trained modules
(counted from the code by ``Method.parameter_counts``); per-face time at batch 1 after 20
warm-up calls, median over ``n_timed`` calls (1,000 in the paper's protocol), synchronising
CUDA around each call, no I/O; throughput (faces/s) at a large batch. Training wall time is read
from a run's records by the benchmark harness.
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Mapping

import torch


def device_name(device: torch.device) -> str:
    """Human-readable name of the device, e.g. ``NVIDIA H100 80GB HBM3`` or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), None) if cpuinfo.is_file() else None
    return f"{model or platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"


def time_inference(fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                   input_shape: tuple[int, int, int] = (3, 16, 16), warmup: int = 20,
                   n_timed: int = 1000, large_batch: int = 256, large_repeats: int = 5,
                   seed: int = 0) -> dict:
    """Time ``fn`` on random inputs in [0,1] of ``input_shape`` on ``device`` (no I/O).

    Returns ``ms_per_face`` (median at batch 1), ``ms_per_face_p10``/``_p90``, ``faces_per_s``
    (``large_batch`` / median time of ``large_repeats`` calls after 2 warm-up calls), the batch
    sizes and counts used, and ``device_name``.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(seed)

    def timed(x: torch.Tensor, warm: int, n: int) -> list[float]:
        with torch.no_grad():
            for _ in range(warm):
                fn(x)
            sync()
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn(x)
                sync()
                out.append(time.perf_counter() - t0)
        return out

    one = timed(torch.rand((1, *input_shape), generator=gen).to(device), warmup, n_timed)
    big = timed(torch.rand((large_batch, *input_shape), generator=gen).to(device), 2, large_repeats)
    q = statistics.quantiles(one, n=10) if len(one) > 1 else [one[0]] * 9
    return {"ms_per_face": 1e3 * statistics.median(one), "ms_per_face_p10": 1e3 * q[0],
            "ms_per_face_p90": 1e3 * q[-1], "faces_per_s": large_batch / statistics.median(big),
            "batch_timed": 1, "n_timed": n_timed, "warmup": warmup, "large_batch": large_batch,
            "device": str(device), "device_name": device_name(device)}


def model_complexity(super_resolve: Callable[[torch.Tensor], torch.Tensor], counts: Mapping[str, int],
                     device: torch.device, **timing) -> dict:
    """Parameter counts (``params_deployed``, ``params_trained``, one ``params_NET`` per net, from
    ``counts`` as :meth:`Method.parameter_counts` gives them) and :func:`time_inference` of
    ``super_resolve`` (``(N,3,16,16)`` -> ``(N,3,64,64)``, floats in [0,1], on ``device``)."""
    result = {"params_deployed": counts["deployed"], "params_trained": counts["trained"],
              **{f"params_{k}": v for k, v in counts.items() if k not in ("deployed", "trained")}}
    result.update(time_inference(super_resolve, device, **timing))
    return result
