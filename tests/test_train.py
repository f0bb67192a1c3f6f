"""The training engine on real faces (the embedded sample) with a small real test method.

``TinySR`` (bicubic + a small residual CNN trained with MSE, two stages) is defined here and
used as ``test_train:TinySR``; it is not in the method registry. Other test modules import it.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from lrfacebench.cli.train import methods_command, train_command
from lrfacebench.degrade import downsample, upsample
from lrfacebench.errors import TrainError
from lrfacebench.io import load_checkpoint
from lrfacebench.methods.base import Batch, Method, MethodConfig, Stage
from lrfacebench.runs import list_checkpoints, load_method
from lrfacebench.training.loop import train

TINY = "test_train:TinySR"
TESTS = Path(__file__).resolve().parent


@dataclass
class TinyConfig(MethodConfig):
    width: int = 8
    lr: float = 2e-3
    batch: int = 8
    pretrain_iterations: int = 30
    finetune_iterations: int = 30
    cycle_weight: float = 0.5
    nan_at: int = -1  # finetune step whose loss is made NaN (to test divergence handling)


class TinySR(Method):
    """Test-only: SR = bicubic(x) + CNN(bicubic(x)); stage 1 MSE on artificial pairs, stage 2 adds
    an LR-consistency term on genuine LR, mse(DS(SR(x_g)), x_g). BatchNorm gives it buffers."""

    name = "tiny"
    summary = "test-only tiny residual CNN"
    Config = TinyConfig
    presets = {"paper": {}, "cpu": {}, "smoke": {"pretrain_iterations": 12, "finetune_iterations": 12}}
    deployed = ("sr",)

    def __init__(self, config: TinyConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        w = config.width
        self.nets["sr"] = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                                        nn.Conv2d(w, 3, 3, padding=1)).to(self.device)
        self.optimizers["sr"] = torch.optim.Adam(self.nets["sr"].parameters(), lr=config.lr)
        self.mode = True  # tracked like CR does: the engine must hand train mode back after grids

    def train(self, mode: bool = True) -> "TinySR":
        self.mode = mode
        return super().train(mode)

    def stages(self) -> list[Stage]:
        c = self.config
        return [Stage("pretrain", c.pretrain_iterations, ("hr", "lr_artificial"), c.batch),
                Stage("finetune", c.finetune_iterations, ("hr", "lr_artificial", "lr_genuine"), c.batch)]

    def _sr(self, x: torch.Tensor) -> torch.Tensor:
        up = upsample(x)
        return up + self.nets["sr"](up)

    def train_step(self, stage: str, batch: Batch, step: int) -> dict[str, float]:
        if not self.mode:
            raise RuntimeError("train_step called while the method is in eval mode")
        terms = {"l_sr": F.mse_loss(self._sr(batch.lr_artificial), batch.hr)}
        loss = terms["l_sr"]
        if stage == "finetune":
            g = batch.lr_genuine
            terms["l_cycle"] = F.mse_loss(downsample(self._sr(g)), g)
            loss = loss + self.config.cycle_weight * terms["l_cycle"]
            if step == self.config.nan_at:
                terms["l_cycle"] = terms["l_cycle"] * float("nan")
        self.optimizers["sr"].zero_grad()
        loss.backward()
        self.optimizers["sr"].step()
        return {k: v.item() for k, v in terms.items()}

    def super_resolve(self, lr: torch.Tensor, artificial: bool = False) -> torch.Tensor:
        return self._sr(lr.to(self.device)).clamp(0, 1)

    def regulate(self, lr: torch.Tensor) -> torch.Tensor:
        return downsample(self.super_resolve(lr)).clamp(0, 1)


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _nets(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    state = load_checkpoint(path)
    return state["nets"] if "nets" in state else state["state"]["nets"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for net in a:
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(TINY, "smoke", out=out, device="cpu", seed=3, deterministic=True,
                 overrides=["engine.checkpoint_every=5", "engine.log_every=1", "engine.sample_every=6"])


def test_smoke_run_writes_a_complete_run_directory(smoke_run):
    cfg = json.loads((smoke_run / "config.json").read_text())
    assert cfg["method"] == TINY and cfg["preset"] == "smoke" and len(cfg["config_hash"]) == 64
    assert cfg["config"]["pretrain_iterations"] == 12 and cfg["config"]["n_identities"] > 0
    env = json.loads((smoke_run / "env.json").read_text())
    assert env["seed"] == 3 and env["data"]["hr"]["source"] == "sample" and len(env["data"]["lr"]["sha256"]) == 64
    assert "torch" in env and "argv" in env
    # checkpoints: a finished stage keeps only its end-of-stage checkpoint; all load weights-only
    names = sorted(p.name for _, p in list_checkpoints(smoke_run))
    assert names == ["00_pretrain_done.pt", "01_finetune_done.pt"]
    for p in (smoke_run / "checkpoints").iterdir():
        torch.load(p, map_location="cpu", weights_only=True)
    final = torch.load(smoke_run / "final.pt", weights_only=True)
    assert final["method"] == TINY and final["deployed"] == ["sr"] and set(final["nets"]) == {"sr"}
    _assert_same_weights(final["nets"], _nets(smoke_run / "checkpoints" / "01_finetune_done.pt"))
    params = json.loads((smoke_run / "parameters.json").read_text())
    assert params["sr"] == params["deployed"] == sum(v.numel() for k, v in final["nets"]["sr"].items()
                                                     if "running" not in k and "num_batches" not in k)
    # metrics: every term, every step (log_every=1), and training lowers L_sr on real faces
    rows = _metrics(smoke_run)
    l_sr = [float(r["value"]) for r in rows if r["name"] == "l_sr"]
    assert len(l_sr) == 24 and {r["name"] for r in rows if r["stage"] == "finetune"} >= {"l_sr", "l_cycle", "img_per_s"}
    assert sum(l_sr[-4:]) < sum(l_sr[:4])
    # sample grids: 8 faces x (genuine | regulated | SR), with a header strip
    grids = sorted((smoke_run / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["00_pretrain_00000006.png", "00_pretrain_00000012.png",
                                       "01_finetune_00000006.png", "01_finetune_00000012.png"]
    from PIL import Image
    w, h = Image.open(grids[-1]).size
    assert (w, h) == (3 * 66 + 2, 14 + 8 * 66 + 2)
    assert "pretrain 12/12" in (smoke_run / "log.txt").read_text()


def test_sample_grid_restores_modes_and_rng():
    from lrfacebench.training.samples import sample_grid

    m = TinySR(TinyConfig(), "cpu")
    m.nets["sr"][1].eval()  # e.g. a frozen BatchNorm stays frozen
    lr = torch.rand(3, 3, 16, 16)
    rng = torch.get_rng_state()
    grid = sample_grid(m, lr)
    assert grid.shape == (14 + 3 * 66 + 2, 3 * 66 + 2, 3) and grid.dtype.name == "uint8"
    assert m.mode and m.nets["sr"].training and not m.nets["sr"][1].training
    assert torch.equal(torch.get_rng_state(), rng)
    art = sample_grid(m, torch.rand(2, 3, 16, 16), artificial=True, hr=torch.rand(2, 3, 64, 64))
    assert art.shape == (14 + 2 * 66 + 2, 3 * 66 + 2, 3)  # DS(HR) | SR | HR


def test_load_method_from_run_final_and_checkpoint_agree(smoke_run, sample_dir):
    from lrfacebench.data.faces import list_sample, load_faces

    lr = load_faces(list_sample("lr", ("test",))).images[:6].float() / 255
    outs = [load_method(p).super_resolve(lr) for p in
            (smoke_run, smoke_run / "final.pt", smoke_run / "checkpoints" / "01_finetune_done.pt")]
    assert outs[0].shape == (6, 3, 64, 64) and 0 <= outs[0].min() and outs[0].max() <= 1
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert not load_method(smoke_run).nets["sr"].training


def test_existing_run_directory_is_refused_without_resume(smoke_run):
    with pytest.raises(TrainError, match="--resume"):
        train(TINY, "smoke", out=smoke_run, device="cpu")


def test_resume_with_other_config_is_refused_and_finished_run_has_nothing_to_do(smoke_run):
    with pytest.raises(TrainError, match="differs"):
        train(TINY, "smoke", out=smoke_run, device="cpu", resume=True, overrides=["lr=0.1"])
    before = _nets(smoke_run / "final.pt")
    train(TINY, out=smoke_run, device="cpu", resume=True)  # preset and seed come from the run
    _assert_same_weights(_nets(smoke_run / "final.pt"), before)
    assert len(json.loads((smoke_run / "env.json").read_text())["sessions"]) >= 1


def test_stage_by_stage_equals_one_run(tmp_path, smoke_run):
    opts = dict(device="cpu", seed=3, deterministic=True, overrides=["engine.checkpoint_every=5"])
    with pytest.raises(TrainError, match="run `--stage pretrain` first"):
        train(TINY, "smoke", out=tmp_path / "a", stage="finetune", **opts)
    train(TINY, "smoke", out=tmp_path / "b", stage="pretrain", **opts)
    assert not (tmp_path / "b" / "final.pt").exists()
    train(TINY, "smoke", out=tmp_path / "b", stage="finetune", **opts)
    _assert_same_weights(_nets(tmp_path / "b" / "final.pt"), _nets(smoke_run / "final.pt"))
    with pytest.raises(TrainError, match="has no stage 'nope'"):
        train(TINY, "smoke", out=tmp_path / "b", stage="nope", **opts)


def test_init_from_a_run_starts_a_stage_from_its_stage_before(tmp_path, smoke_run):
    """``--init RUN --stage NAME``: with the same options the new run ends with RUN's weights
    (bit for bit); with other options it records what differs and trains NAME alone."""
    opts = dict(device="cpu", seed=3, deterministic=True)
    same = train(TINY, "smoke", out=tmp_path / "same", init=str(smoke_run), stage="finetune", **opts)
    _assert_same_weights(_nets(same / "final.pt"), _nets(smoke_run / "final.pt"))
    assert [p.name for _, p in list_checkpoints(same)] == ["00_pretrain_done.pt", "01_finetune_done.pt"]
    init = json.loads((same / "config.json").read_text())["init"]
    assert init["run"] == str(smoke_run.resolve()) and init["checkpoint"] == "00_pretrain_done.pt"
    assert init["differs"] == [] and {r["stage"] for r in _metrics(same)} == {"finetune"}

    other = train(TINY, "smoke", out=tmp_path / "other", init=str(smoke_run), stage="finetune",
                  overrides=["cycle_weight=0"], **opts)
    assert json.loads((other / "config.json").read_text())["init"]["differs"] == ["cycle_weight"]
    a, b = _nets(other / "final.pt")["sr"], _nets(smoke_run / "final.pt")["sr"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    train(TINY, out=other, device="cpu", resume=True)  # finished: a resume keeps its own config and start
    _assert_same_weights(_nets(other / "final.pt"), {"sr": a})

    with pytest.raises(TrainError, match="needs --stage"):
        train(TINY, "smoke", out=tmp_path / "x", init=str(smoke_run), **opts)
    with pytest.raises(TrainError, match="first stage"):
        train(TINY, "smoke", out=tmp_path / "y", init=str(smoke_run), stage="pretrain", **opts)
    with pytest.raises(TrainError, match="run directory"):
        train(TINY, "smoke", out=tmp_path / "z", init=str(tmp_path), stage="finetune", **opts)
    with pytest.raises(TrainError, match="started from"):
        train(TINY, "smoke", out=other, init=str(same), stage="finetune", overrides=["cycle_weight=0"], **opts)


def test_a_last_stage_of_zero_iterations_still_exports_final(tmp_path):
    """A run whose last stage has 0 iterations (e.g. CR's stage1_sr alone) is finished after the
    stage before it: final.pt holds that stage's weights, and a resume has nothing to do."""
    opts = dict(device="cpu", seed=3, overrides=["pretrain_iterations=3", "finetune_iterations=0"])
    out = train(TINY, "smoke", out=tmp_path / "r", **opts)
    assert [p.name for _, p in list_checkpoints(out)] == ["00_pretrain_done.pt"]
    _assert_same_weights(_nets(out / "final.pt"), _nets(out / "checkpoints" / "00_pretrain_done.pt"))
    train(TINY, out=out, device="cpu", resume=True)
    _assert_same_weights(_nets(out / "final.pt"), _nets(out / "checkpoints" / "00_pretrain_done.pt"))


def test_keep_stage_checkpoints_false_keeps_only_the_newest(tmp_path):
    out = train(TINY, "smoke", out=tmp_path / "r", device="cpu",
                overrides=["pretrain_iterations=2", "finetune_iterations=2", "engine.keep_stage_checkpoints=false"])
    assert [p.name for _, p in list_checkpoints(out)] == ["01_finetune_done.pt"]
    assert (out / "final.pt").is_file()


def test_nan_loss_stops_keeps_last_good_checkpoint_and_names_the_term(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainError, match=r"l_cycle became nan at stage finetune step 8") as e:
        train(TINY, "smoke", out=out, device="cpu", overrides=["nan_at=7", "engine.checkpoint_every=5"])
    assert "01_finetune_00000005.pt" in str(e.value)
    assert list_checkpoints(out)[-1][1].name == "01_finetune_00000005.pt"
    assert not (out / "final.pt").exists()


def test_trains_on_built_dataset_folders_and_needs_every_stream(tmp_path):
    from test_faces import make_built_set

    from lrfacebench.io import sha256_file

    hr = make_built_set(tmp_path / "celeba", paired=True)
    lr = make_built_set(tmp_path / "wider", paired=False, n=10)
    with pytest.raises(TrainError, match="needs genuine LR faces: pass --lr"):
        train(TINY, "smoke", hr=hr, out=tmp_path / "r", device="cpu", split=("all",))
    assert not (tmp_path / "r").exists()  # nothing written for a run that cannot start
    with pytest.raises(TrainError, match="no hr64 images"):
        train(TINY, "smoke", hr=lr, lr=lr, out=tmp_path / "r", device="cpu")
    run = train(TINY, "smoke", hr=hr, lr=lr, out=tmp_path / "r", device="cpu", split=("all",),
                overrides=["pretrain_iterations=2", "finetune_iterations=2"])
    data = json.loads((run / "env.json").read_text())["data"]
    assert data["hr"]["sha256"] == sha256_file(hr / "manifest.csv") and data["lr"]["n_faces"] == 10
    n_ids = len({r["identity"] for r in csv.DictReader(open(hr / "manifest.csv")) if r["identity"]})
    assert json.loads((run / "config.json").read_text())["config"]["n_identities"] == n_ids
    # "@sample" names the embedded sample for one stream while the other is a built set
    mixed = train(TINY, "smoke", hr="@sample", lr=lr, out=tmp_path / "m", device="cpu", split=("all",),
                  overrides=["pretrain_iterations=1", "finetune_iterations=1"])
    data = json.loads((mixed / "env.json").read_text())["data"]
    assert data["hr"]["source"] == "sample" and data["lr"]["n_faces"] == 10


def test_cli_dry_run_list_and_methods(tmp_path, monkeypatch):
    runner = CliRunner()
    (tmp_path / "c.toml").write_text("width = 6\nlr = 0.01\n[engine]\nlog_every = 7\n")
    res = runner.invoke(train_command, [TINY, "--preset", "smoke", "--dry-run", "--out", str(tmp_path / "x"),
                                        "--config", str(tmp_path / "c.toml"), "-o", "width=4"])
    assert res.exit_code == 0, res.output
    assert '"width": 4' in res.output and '"lr": 0.01' in res.output and '"log_every": 7' in res.output
    assert "pretrain: 12 iterations" in res.output
    assert "deployed" in res.output and " 231  (0.000M)" in res.output  # 3*4*9+4 + 2*4 + 4*3*9+3
    assert not (tmp_path / "x").exists()
    from lrfacebench import methods
    monkeypatch.setitem(methods.METHODS, "broken", "lrfacebench.no_such_module:Nope")
    for args, cmd in (([], methods_command), (["--list"], train_command)):
        res = runner.invoke(cmd, args)
        assert res.exit_code == 0, res.output
        assert "bicubic" in res.output and "presets: paper, cpu, smoke" in res.output
        assert "broken     unavailable (ModuleNotFoundError" in res.output
    res = runner.invoke(train_command, ["cr", "--preset", "nope"])
    assert res.exit_code == 2 and "nope" in res.output


def test_dry_run_names_the_deployed_nets_of_the_variant(tmp_path):
    """W/O CR has no regulariser: the dry run must not list phi_cr among the deployed nets."""
    for variant, deployed in (("wo_cr", "phi_sr"), ("default", "phi_cr, phi_sr")):
        res = CliRunner().invoke(train_command, ["cr", "--variant", variant, "--preset", "smoke", "--dry-run",
                                                 "--out", str(tmp_path / variant)])
        assert res.exit_code == 0, res.output
        assert res.output.rstrip().endswith(f"deployed nets: {deployed}"), res.output[-200:]


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    opts = ["--device", "cpu", "--seed", "5", "--deterministic", "-o", "pretrain_iterations=10",
            "-o", "finetune_iterations=60", "-o", "batch=4", "-o", "engine.checkpoint_every=5",
            "-o", "engine.sample_every=1000"]
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", "from lrfacebench.cli import main; main()", "-q", "train", TINY,
                             "--out", str(run), *opts], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocess: same kernels, bit-identical results
    try:
        runner = CliRunner()
        full = runner.invoke(train_command, [TINY, "--out", str(tmp_path / "full"), *opts])
        assert full.exit_code == 0, full.output
        deadline = time.time() + 120
        while not list((run / "checkpoints").glob("01_finetune_0*.pt")):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert not (run / "final.pt").exists()
        resumed = runner.invoke(train_command, [TINY, "--out", str(run), "--resume"])  # the run's own options
        assert resumed.exit_code == 0, resumed.output
    finally:
        torch.set_num_threads(threads)
    assert "starting from" in (run / "log.txt").read_text()
    _assert_same_weights(_nets(run / "final.pt"), _nets(tmp_path / "full" / "final.pt"))
    a = load_checkpoint(run / "checkpoints" / "01_finetune_done.pt")["state"]
    b = load_checkpoint(tmp_path / "full" / "checkpoints" / "01_finetune_done.pt")["state"]
    for k in b["optimizers"]["sr"]["state"]:
        assert torch.equal(a["optimizers"]["sr"]["state"][k]["exp_avg"], b["optimizers"]["sr"]["state"][k]["exp_avg"])
    steps = [(r["stage"], int(r["step"])) for r in _metrics(run) if r["name"] == "l_sr"]
    assert steps == sorted(set(steps), key=lambda s: (s[0] != "pretrain", s[1]))  # no duplicated rows


def test_cuda_devices_get_this_ranks_index(monkeypatch):
    """`--device cuda` (and auto on a CUDA machine) must name an index: CUDA RNG state and memory
    queries reject a bare "cuda" (found on a GPU). Checked without a GPU by faking its presence."""
    from lrfacebench.runtime import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun's rank on this node
    assert resolve_device("cuda") == resolve_device(torch.device("cuda")) == torch.device("cuda", 3)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("CPU") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
