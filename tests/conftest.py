"""Shared fixtures: the embedded sample (real faces) and small helpers. Tests never need ../shared."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lrfacebench.methods import METHODS


SAMPLE = Path(__file__).resolve().parent.parent / "lrfacebench" / "sample"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True, scope="session")
def _private_metric_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's FID feature cache (~/.cache/lrfacebench)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LRFB_CACHE_DIR", str(tmp_path_factory.mktemp("lrfb-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _tiny_method_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own method (``test_train:TinySR``) is registered, as a user registers theirs:
    weights files may only name registered methods."""
    monkeypatch.setitem(METHODS, "test_train:TinySR", "test_train:TinySR")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE
