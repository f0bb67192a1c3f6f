"""The benchmark's image cache: each method's outputs on each test set, and the image folders FID
reads, written once as PNG folders (complete when their ``_complete.json`` exists), so a killed
benchmark resumes without super-resolving again.

Outputs are ``(N,3,64,64)`` SR faces or ``(N,3,16,16)`` regulated LR faces, float in [0,1],
quantised to uint8 levels (they are what the PNGs hold); face i of a test set is file ``i:06d.png``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lrfacebench import io
from lrfacebench.bench.data import TestSet
from lrfacebench.bench.provenance import RunKey, TrainedRuns
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.pixels import quantise, to_unit_float


def lr_input(test: TestSet) -> torch.Tensor:
    """``(N,3,16,16)`` float in [0,1]: the set's LR faces (a paired set's LR side), or quantised
    DS(HR) for artificial sets."""
    if test.lr is not None:
        return to_unit_float(test.lr.images)
    x = to_unit_float(test.faces.images)
    return quantise(downsample(x)) if test.role == "artificial" else x


class OutputCache:
    """Outputs of the methods of ``runs`` under ``out/outputs``; FID image folders under ``data_dir``."""

    def __init__(self, out: Path, data_dir: Path, runs: TrainedRuns, batch_size: int) -> None:
        self.out, self.data_dir, self.runs, self.batch_size = out, data_dir, runs, batch_size
        self._memory: dict[tuple[RunKey, str, str], torch.Tensor] = {}

    def outputs(self, key: RunKey, test: TestSet, what: str = "sr") -> tuple[torch.Tensor, Path]:
        """``what="sr"``: ``(N,3,64,64)``; ``"regulated"``: ``(N,3,16,16)`` — float in [0,1], and the
        folder of PNGs holding them."""
        folder = self.out / "outputs" / self.runs.run_name(key) / f"{test.name}-{test.role}-{what}"
        memory_key = (key, test.name + test.role, what)
        if memory_key in self._memory:
            return self._memory[memory_key], folder
        marker = folder / "_complete.json"
        produced_by = self.runs.checkpoint(key) or key.method
        if marker.is_file() and io.read_json(marker).get("provenance") == produced_by:
            images = io.read_png_folder(folder)
        else:
            images = self._compute(key, test, what)
            io.write_png_folder(folder, images)
            io.write_json(marker, {"n": len(images), "test_set": test.name, "test_sha256": test.sha256,
                                   "provenance": produced_by})
        self._memory[memory_key] = result = to_unit_float(images)
        return result, folder

    def _compute(self, key: RunKey, test: TestSet, what: str) -> torch.Tensor:
        """The method's outputs on the test set's LR faces in batches, uint8 on the CPU."""
        method = self.runs.method(key)
        lr = lr_input(test)
        chunks = []
        with torch.no_grad():
            for i in range(0, len(lr), self.batch_size):
                x = lr[i:i + self.batch_size].to(self.runs.device)
                if what == "sr":
                    y = method.super_resolve(x, artificial=test.role == "artificial")
                else:
                    y = method.regulate(x)
                    if y is None:
                        raise ValueError(f"{key.label} has no LR-space regulation (Table 5 needs one)")
                chunks.append(to_uint8(y.float().cpu()))
        return torch.cat(chunks)

    def image_folder(self, name: str, images: torch.Tensor) -> Path:
        """Write ``(N,3,S,S)`` uint8 images once as PNGs under ``data_dir/name`` (for FID)."""
        folder = self.data_dir / name
        marker = folder / "_complete.json"
        if not marker.is_file():
            io.write_png_folder(folder, images)
            io.write_json(marker, {"n": len(images)})
        return folder
