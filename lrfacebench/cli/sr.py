"""``lrfb sr``."""
from __future__ import annotations

from pathlib import Path

import click

from lrfacebench.cli.errors import Command


@click.command("sr", cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("weights")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder for the 64x64 PNGs.")
@click.option("--artificial", is_flag=True,
              help="Inputs are artificial LR (bicubic-downsampled HR): CR then skips phi_cr (Table 3).")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(min=1), help="Faces per batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def sr_command(weights: str, inputs: tuple[Path, ...], out: Path, artificial: bool, batch: int, device: str) -> None:
    """Super-resolve face crops with WEIGHTS into 64x64 PNGs: a zoo model's name (`cr`, `vdsr`,
    ...: its shipped weights, see `lrfb zoo list`), a run directory, its final.pt, a checkpoint,
    a .safetensors weights file, or `bicubic`. An existing path wins over a zoo name.

    INPUT is any number of image files or folders (searched recursively). Each crop, of any
    size, is first resized to 16x16 (MATLAB-style bicubic). Outputs keep the input names
    (with .png) and the folder structure; unreadable inputs are reported and skipped.

    \b
    Examples:
      lrfb sr vdsr faces/ --out sr/               # the zoo's VDSR
      lrfb sr runs/cr-smoke faces/ --out sr/
      lrfb sr bicubic face1.png face2.jpg --out sr-bicubic/
      lrfb sr runs/cr/final.pt helen_lr/ --artificial --out sr-helen/
    """
    from lrfacebench.sr import collect_inputs, super_resolve_files
    from lrfacebench.zoo import load_weights

    method = load_weights(weights, device)
    pairs, skipped = collect_inputs(inputs, out)
    report = super_resolve_files(method, pairs, out, artificial=artificial, batch=batch)
    report.skipped[:0] = skipped
    for src, why in report.skipped:
        click.echo(f"skipped {src}: {why}", err=True)
    if not report.written:
        raise click.ClickException(f"no image could be super-resolved ({len(report.skipped)} skipped)")
    click.echo(f"wrote {len(report.written)} image(s) to {out}; skipped {len(report.skipped)}")
