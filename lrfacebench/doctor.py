"""The installation check of ``lrfb doctor``: versions, device, every weight file and every zoo
model (hash and load), offline."""
from __future__ import annotations

import torch

from lrfacebench import runtime, weights, zoo


def report() -> tuple[list[str], int]:
    """The report's lines, and how many required weight files are missing or corrupt."""
    env = runtime.environment(runtime.resolve_device("auto"))
    lines = [f"{key:>16}: {env.get(key)}" for key in ("lrfacebench", "python", "torch", "torchvision",
                                                      "facenet-pytorch", "clean-fid", "opencv-python",
                                                      "numpy", "device")]
    lines.append(f"{'cuda':>16}: {'yes, ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    failed = 0
    for name, w in sorted(weights.REGISTRY.items()):
        path, status = weights.find(name)
        if path is not None:
            state = "OK"
        elif w.optional:
            state = "absent, optional"
        else:
            state, failed = "MISSING", failed + 1
        lines.append(f"{name:>24}: {state}: {status}  [{w.purpose}]")
    for name, ok, status in zoo.verify():
        failed += not ok
        lines.append(f"{'zoo:' + name:>24}: {'OK' if ok else 'FAILED'}: {status}  [zoo model]")
    return lines, failed
