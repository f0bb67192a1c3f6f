"""The distributors of a build (``lrfacebench.data.distribute``): a build on a local Ray writes
the same bytes as a single-process build, a Ray build killed mid-shard resumes to the same
dataset, a Ray worker's error is the worker's, and the distributor is checked before anything
is built."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrfacebench.cli.build import build_dataset_command
from lrfacebench.data.build import build
from lrfacebench.data.distribute import DISTRIBUTORS, check_distributor, distribute
from lrfacebench.data.recipe import resolve_config
from lrfacebench.data.worker import ShardJob
from lrfacebench.errors import BuildError
from test_build import FAST, _argv, cli, photos  # noqa: F401 (photos: the build tests' six photos)

RAY = ("--distributor", "ray", "--workers", "2")


def written(out: Path) -> dict[str, str]:
    """sha256 of the tables and of every PNG a build wrote, keyed by relative path."""
    files = [out / n for n in ("manifest.csv", "rejected.csv", "unreadable.csv")] + sorted(out.rglob("*.png"))
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def ray():
    return pytest.importorskip("ray", reason='--distributor ray needs Ray: pip install -e ".[ray]"')


@pytest.fixture(scope="module")
def single(tmp_path_factory, photos) -> Path:  # noqa: F811
    """The photos built in this one process, one shard per photo."""
    out = tmp_path_factory.mktemp("single") / "out"
    cli("build-dataset", "folder", "--root", str(photos), "--out", str(out), "-o", "build.shard_size=1", *FAST)
    return out


@pytest.mark.slow
def test_local_ray_build_equals_single_process_build(tmp_path, ray, photos, single):  # noqa: F811
    """On a Ray this process had started (2 CPUs), which the build uses and leaves running; a
    worker's error comes back as the worker raised it."""
    out = tmp_path / "out"
    cfg = resolve_config("folder", overrides=["build.shard_size=1", "detector.scales=[2.0]"], device="cpu")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        result = build(cfg, photos, out, workers=2, distributor="ray")
        assert ray.is_initialized()
        bad = ShardJob(str(tmp_path / "bad"), str(photos), 0, "-", {"detector": {"bogus": 1}}, ())
        with pytest.raises(ValueError, match=r"^unknown DetectorConfig option\(s\): \['bogus'\]"):
            distribute([bad], "ray")
    finally:
        ray.shutdown()
    assert result is not None and len(result.manifest) >= 10
    assert written(out) == written(single)
    assert len(list((out / "shards").glob("s*.json"))) == 6


@pytest.mark.slow
def test_ray_build_killed_mid_shard_then_rerun_equals_single_process_build(tmp_path, ray, photos, single):  # noqa: F811
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a session of its own: the Ray processes the killed driver leaves behind are ended with it
    proc = subprocess.Popen([*_argv(photos, out), *RAY], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not list((out / "shards").glob("s*.json")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the build ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)  # the other worker is mid-shard
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert len(list((out / "shards").glob("s*.json"))) < 6 and not (out / "manifest.csv").exists()
    rerun = subprocess.run([*_argv(photos, out), *RAY], capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0 and "built folder" in rerun.stdout, rerun.stdout + rerun.stderr
    assert written(out) == written(single)
    assert not list(out.rglob("*.tmp"))


def test_distributor_is_checked_before_anything_is_built(tmp_path, photos, monkeypatch):  # noqa: F811
    choices = next(p for p in build_dataset_command.params if p.name == "distributor").type.choices
    assert tuple(choices) == DISTRIBUTORS
    with pytest.raises(BuildError, match="unknown distributor; choose one of multiprocessing, ray"):
        check_distributor("dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = tmp_path / "out"
    res = cli("build-dataset", "folder", "--root", str(photos), "--out", str(out), *RAY, ok=False)
    assert '--distributor ray: Ray is not installed; pip install -e ".[ray]"' in res.output
    assert not out.exists()
