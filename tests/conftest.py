"""Shared fixtures: the embedded sample (real faces) and small helpers. Tests never need ../shared."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SAMPLE = Path(__file__).resolve().parent.parent / "lrfacebench" / "sample"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE
