"""Super-resolve face crops of any size with a method (``lrfb sr``).

Every input crop is resized to 16x16 with ``degrade.imresize`` and quantised to uint8 (exactly
how ``lrfb build-dataset`` makes ``lr16``), super-resolved in batches to 64x64, and written as a
PNG with the input's name (``.png`` suffix), keeping the folder structure below each input folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from lrfacebench import io
from lrfacebench.degrade import imresize
from lrfacebench.methods import Method
from lrfacebench.pixels import quantise, rgb_to_tensor, tensor_to_rgb

log = logging.getLogger(__name__)


@dataclass
class SRReport:
    """The files :func:`super_resolve_files` wrote and the inputs it skipped, with the reason."""

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


def to_lr16(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(H,W,3)`` of any size -> ``(3,16,16)`` float in [0,1], quantised like ``lr16``."""
    return quantise(imresize(rgb_to_tensor(rgb), (16, 16)))[0]


def super_resolve_files(method: Method, pairs: Sequence[tuple[Path, Path]], out_dir: Path,
                        artificial: bool = False, batch: int = 256) -> SRReport:
    """Run ``method`` over ``pairs`` in batches of ``batch``; write 64x64 PNGs under ``out_dir``."""
    report = SRReport()
    bar = tqdm(total=len(pairs), desc="sr", unit="face", disable=None)

    def flush(items: list[tuple[Path, torch.Tensor]]) -> None:
        with torch.no_grad():
            lr = torch.stack([t for _, t in items]).to(method.device)
            sr = tensor_to_rgb(method.super_resolve(lr, artificial=artificial).float())
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
