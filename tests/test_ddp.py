"""Data-parallel training under torchrun: 2 CPU processes (gloo) stay in sync while seeing different faces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent

WORKER = """
import os, sys
from pathlib import Path
import pytest
import torch
from lrfacebench.training.loop import Trainer
from lrfacebench.training.spec import RunSpec
from test_train import TinySR

out = Path(sys.argv[1])
seen = []  # what this rank trained on
step = TinySR.train_step
TinySR.train_step = lambda self, stage, batch, i: seen.append(float(batch.hr.sum())) or step(self, stage, batch, i)
trainer = Trainer(RunSpec("test_train:TinySR", "smoke", out=out / "run", device="cpu", seed=1,
                          overrides=["pretrain_iterations=6", "finetune_iterations=6", "batch=4",
                                     "engine.checkpoint_every=4"]))
trainer.run()
m = trainer.method
torch.save({"nets": {k: v.state_dict() for k, v in m.nets.items()},
            "adam": m.optimizers["sr"].state_dict()["state"], "seen": seen}, out / f"rank{os.environ['RANK']}.pt")
"""


@pytest.mark.slow
def test_two_gloo_processes_train_in_sync(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in r0["nets"]["sr"].items():  # weights, BatchNorm statistics, step counters
        assert torch.equal(v, r1["nets"]["sr"][k]), k
    for i, st in r0["adam"].items():
        assert torch.equal(st["exp_avg"], r1["adam"][i]["exp_avg"]) and torch.equal(st["exp_avg_sq"], r1["adam"][i]["exp_avg_sq"])
    assert int(r0["nets"]["sr"]["1.num_batches_tracked"]) == 6 + 2 * 6  # 2 forwards per finetune step
    assert len(r0["seen"]) == 12 and all(a != b for a, b in zip(r0["seen"], r1["seen"]))  # other faces
    # rank 0 alone wrote one run, which records the world size; its export equals the replicas
    run = tmp_path / "run"
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    final = torch.load(run / "final.pt", weights_only=True)["nets"]["sr"]
    assert all(torch.equal(v, final[k]) for k, v in r0["nets"]["sr"].items())
    assert (run / "log.txt").read_text().count("finetune 6/6") == 1
