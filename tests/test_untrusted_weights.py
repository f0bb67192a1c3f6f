"""A weights file never chooses which module is imported: only registered method names load."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lrfacebench.cli.sr import sr_command
from lrfacebench.errors import RunError
from lrfacebench.io import save_checkpoint
from lrfacebench.runs import FINAL, checkpoint_path, load_method

MODULE = "lrfb_untrusted_payload"


@pytest.fixture()
def payload(tmp_path, monkeypatch) -> Path:
    """A module on ``sys.path`` whose import writes a marker file (the side effect to prevent)."""
    marker = tmp_path / "imported.marker"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "from lrfacebench.methods.trivial import Bicubic as X\n")
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return marker


def _weights(where: Path, layout: str, method: str) -> Path:
    """A weights export or a training checkpoint naming ``method``; returns what to load."""
    state = {"method": method, "config": {}, "nets": {}, "deployed": []}
    if layout == "file":
        save_checkpoint(where / "w.pt", state)
        return where / "w.pt"
    run = where / "run"
    if layout == "final":
        save_checkpoint(run / FINAL, state)
    else:
        save_checkpoint(checkpoint_path(run, 0, "train", None),
                        {**state, "stage": "train", "stage_index": 0, "step": 1, "state": {"nets": {}}})
    return run


@pytest.mark.parametrize("layout", ["file", "final", "checkpoint"])
@pytest.mark.parametrize("method", [f"{MODULE}:X", "no_such_method"])
def test_a_file_naming_an_unregistered_method_is_refused_before_any_import(payload, tmp_path, layout, method,
                                                                           sample_dir):
    target = _weights(tmp_path, layout, method)
    with pytest.raises(RunError, match="which is not registered"):
        load_method(target)
    face = sorted((sample_dir / "genuine_lr").glob("*.png"))[0]
    res = CliRunner().invoke(sr_command, [str(target), str(face), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "not registered" in lines[0]
    assert not payload.exists() and MODULE not in sys.modules
    assert not (tmp_path / "out").exists()


def test_the_payload_would_have_run_if_imported(payload):
    """The guard above is what keeps the marker away: importing the module writes it."""
    importlib.import_module(MODULE)
    assert payload.read_text() == "imported"


def test_an_installed_plugin_registers_a_method_without_importing_it(payload, tmp_path, monkeypatch):
    """An installed package's ``lrfacebench.methods`` entry points are registered (reading them
    imports nothing); one shadowing a built-in or not of the form module:Class is ignored. Its
    weights then load."""
    from lrfacebench.methods import METHODS, _add_plugins
    dist = tmp_path / "site" / "lrfb_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lrfb-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[lrfacebench.methods]\nplugged = {MODULE}:X\nbicubic = {MODULE}:X\nbroken = {MODULE}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry = dict(METHODS)
    _add_plugins(registry)
    assert registry["plugged"] == f"{MODULE}:X" and registry["bicubic"] == METHODS["bicubic"]
    assert "broken" not in registry
    assert not payload.exists() and MODULE not in sys.modules
    monkeypatch.setattr("lrfacebench.methods.METHODS", registry)
    monkeypatch.setattr("lrfacebench.runs.METHODS", registry)
    method = load_method(_weights(tmp_path, "file", "plugged"))  # the user installed it: it may import
    assert payload.exists() and type(method).__name__ == "Bicubic"
