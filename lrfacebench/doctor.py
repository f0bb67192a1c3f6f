"""``lrfb doctor``: versions, device and every weight file, checked offline."""
from __future__ import annotations

import click


@click.command("doctor")
def doctor_command() -> None:
    """Check the installation offline: versions, device, and the hash of every weight file.

    Exits with status 1 when a required weight file is missing or corrupt.

    Example: lrfb doctor
    """
    import torch

    from lrfacebench import runtime, weights

    env = runtime.environment(runtime.resolve_device("auto"))
    for key in ("lrfacebench", "python", "torch", "torchvision", "facenet-pytorch", "clean-fid",
                "opencv-python", "numpy", "device"):
        click.echo(f"{key:>16}: {env.get(key)}")
    click.echo(f"{'cuda':>16}: {'yes, ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    failed = 0
    for name, w in sorted(weights.REGISTRY.items()):
        path, status = weights.find(name)
        if path is not None:
            state = "OK"
        elif w.optional:
            state = "absent, optional"
        else:
            state, failed = "MISSING", failed + 1
        click.echo(f"{name:>24}: {state}: {status}  [{w.purpose}]")
    if failed:
        raise SystemExit(1)
