"""``lrfb sr``: super-resolve face crops of any size with a trained run, a weights file or bicubic.

Every input crop is resized to 16x16 with ``degrade.imresize`` and quantised to uint8 (exactly
how ``lrfb build-dataset`` makes ``lr16``), super-resolved in batches to 64x64, and written as a
PNG with the input's name (``.png`` suffix), keeping the folder structure below each input folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import click

from lrfacebench import io

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lrfacebench.methods.base import Method

log = logging.getLogger(__name__)


@dataclass
class SRReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason)


def collect_inputs(inputs: Sequence[Path], out_dir: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """``(input file, output path relative to out_dir)`` pairs, and inputs skipped with a reason.

    Folders are searched recursively for images (their structure is kept); files are taken as
    given. Files inside ``out_dir`` are ignored; two inputs mapping to one output name are a skip.
    """
    out_dir = out_dir.resolve()
    pairs: list[tuple[Path, Path]] = []
    skipped: list[tuple[Path, str]] = []
    seen: dict[Path, Path] = {}
    for inp in inputs:
        if inp.is_dir():
            files = [(f, f.relative_to(inp)) for f in io.list_images(inp) if out_dir not in f.resolve().parents]
            if not files:
                skipped.append((inp, "folder holds no images"))
        else:
            files = [(inp, Path(inp.name))]
        for f, rel in files:
            rel = rel.with_suffix(".png")
            if rel in seen:
                skipped.append((f, f"same output name as {seen[rel]}"))
                continue
            seen[rel] = f
            pairs.append((f, rel))
    return pairs, skipped


def to_lr16(rgb: "object") -> "torch.Tensor":
    """RGB uint8 ``(H,W,3)`` of any size -> ``(3,16,16)`` float in [0,1], quantised like ``lr16``."""
    import torch

    from lrfacebench.degrade import imresize, to_uint8

    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    return to_uint8(imresize(x, (16, 16)))[0].float() / 255.0


def super_resolve_files(method: "Method", pairs: Sequence[tuple[Path, Path]], out_dir: Path,
                        artificial: bool = False, batch: int = 256) -> SRReport:
    """Run ``method`` over ``pairs`` in batches of ``batch``; write 64x64 PNGs under ``out_dir``."""
    import torch
    from tqdm import tqdm

    from lrfacebench.degrade import to_uint8

    report = SRReport()
    bar = tqdm(total=len(pairs), desc="sr", unit="face", disable=None)

    def flush(items: list[tuple[Path, torch.Tensor]]) -> None:
        with torch.no_grad():
            lr = torch.stack([t for _, t in items]).to(method.device)
            sr = to_uint8(method.super_resolve(lr, artificial=artificial).float()).permute(0, 2, 3, 1).cpu().numpy()
        for (rel, _), img in zip(items, sr):
            io.write_png(out_dir / rel, img)
            report.written.append(out_dir / rel)
        bar.update(len(items))

    pending: list[tuple[Path, torch.Tensor]] = []
    for src, rel in pairs:
        try:
            pending.append((rel, to_lr16(io.read_rgb(src))))
        except io.UnreadableImage as e:
            log.warning("skipped %s: %s", src, e)
            report.skipped.append((src, str(e)))
            bar.update(1)
            continue
        if len(pending) == batch:
            flush(pending)
            pending = []
    if pending:
        flush(pending)
    bar.close()
    return report


@click.command("sr", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("weights")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder for the 64x64 PNGs.")
@click.option("--artificial", is_flag=True,
              help="Inputs are artificial LR (bicubic-downsampled HR): CR then skips phi_cr (Table 3).")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(min=1), help="Faces per batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def sr_command(weights: str, inputs: tuple[Path, ...], out: Path, artificial: bool, batch: int, device: str) -> None:
    """Super-resolve face crops with WEIGHTS (a run directory, its final.pt, a checkpoint,
    or `bicubic`) into 64x64 PNGs.

    INPUT is any number of image files or folders (searched recursively). Each crop, of any
    size, is first resized to 16x16 (MATLAB-style bicubic). Outputs keep the input names
    (with .png) and the folder structure; unreadable inputs are reported and skipped.

    \b
    Examples:
      lrfb sr runs/cr-smoke faces/ --out sr/
      lrfb sr bicubic face1.png face2.jpg --out sr-bicubic/
      lrfb sr runs/cr/final.pt helen_lr/ --artificial --out sr-helen/
    """
    from lrfacebench.train import load_method

    try:
        method = load_method(weights, device)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    pairs, skipped = collect_inputs(inputs, out)
    report = super_resolve_files(method, pairs, out, artificial=artificial, batch=batch)
    report.skipped[:0] = skipped
    for src, why in report.skipped:
        click.echo(f"skipped {src}: {why}", err=True)
    if not report.written:
        raise click.ClickException(f"no image could be super-resolved ({len(report.skipped)} skipped)")
    click.echo(f"wrote {len(report.written)} image(s) to {out}; skipped {len(report.skipped)}")
