"""How a build spreads its shard jobs (img2dataset's distributors): every distributor runs the same
picklable one-shard worker, :func:`lrfacebench.data.worker.run_shard`, which writes the shard's
PNGs and then its done-marker; the driver merges once every shard is done.

- ``multiprocessing``: in this process (one worker), or a pool of ``workers`` processes on this
  machine, one detector each (forked on Linux for CPU detectors, else spawned: :func:`start_method`).
- ``ray``: one Ray task per shard, on a local Ray of ``workers`` CPUs or on the cluster at
  ``ray_address`` (``--out`` and ``--root`` must then be paths every node sees).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from typing import Any, Callable

import torch
from tqdm import tqdm

from lrfacebench.data.worker import ShardJob, run_shard
from lrfacebench.errors import BuildError
from lrfacebench.signals import sigint_handled_by

DISTRIBUTORS = ("multiprocessing", "ray")

Progress = Callable[[int], Any]  # called with a number of items just processed


def check_distributor(distributor: str) -> None:
    """Refuse an unknown distributor, or ``ray`` when Ray is not installed, before anything is built."""
    if distributor not in DISTRIBUTORS:
        raise BuildError(f"{distributor}: unknown distributor; choose one of {', '.join(DISTRIBUTORS)}",
                         param="distributor")
    if distributor == "ray":
        _import_ray()


def distribute(jobs: list[ShardJob], distributor: str = "multiprocessing", workers: int = 1,
               ray_address: str | None = None) -> None:
    """Run every shard job with ``distributor`` (one of :data:`DISTRIBUTORS`), with a progress bar."""
    check_distributor(distributor)
    total = sum(len(j.items) for j in jobs)
    with tqdm(total=total, unit="img", desc="build", file=sys.stderr, disable=None) as bar:
        if distributor == "ray":
            run_ray(jobs, workers, ray_address, bar.update)
        else:
            run_multiprocessing(jobs, workers, bar.update)


def run_multiprocessing(jobs: list[ShardJob], workers: int, progress: Progress) -> None:
    """Run shard jobs in this process (``workers == 1``) or in a pool, one detector per process."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            run_shard(job, progress)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    # the workers start with Ctrl-C ignored: a Ctrl-C to the process group (as a terminal sends)
    # reaches only this process, which prints one line instead of one traceback per worker
    with sigint_handled_by(signal.SIG_IGN):
        pool = mp.get_context(start_method(jobs)).Pool(min(workers, len(jobs)), initializer=_init_worker,
                                                       initargs=(threads,))
    with pool:  # on KeyboardInterrupt here, leaving the block terminates the workers
        for summary in pool.imap_unordered(run_shard, jobs):
            progress(summary["items"])


def start_method(jobs: list[ShardJob]) -> str:
    """``"fork"`` for CPU detectors on Linux, else ``"spawn"``.

    A spawned worker imports torch, torchvision (which imports torch._dynamo) and facenet-pytorch
    again: 5-7 s per process on a 2-core machine; the sample's 13-photo build with 2 workers took
    24.2 s spawned and 18.1 s forked in one measurement (docs/performance.md). A forked one inherits them. Fork is unsafe once CUDA is initialised, so any
    CUDA detector (or ``auto`` on a machine with CUDA) gets spawned workers. The parent runs no
    detection before the pool starts, and each worker runs single-threaded or with its share of
    the cores (:func:`_init_worker`)."""
    if sys.platform != "linux" or "fork" not in mp.get_all_start_methods() or torch.cuda.is_initialized():
        return "spawn"
    devices = {str(j.config.get("detector", {}).get("device", "auto")).lower() for j in jobs}
    if devices <= {"cpu"} or (devices <= {"cpu", "auto"} and not torch.cuda.is_available()):
        return "fork"
    return "spawn"


def _init_worker(threads: int) -> None:
    torch.set_num_threads(min(torch.get_num_threads(), threads))


def run_ray(jobs: list[ShardJob], workers: int, address: str | None, progress: Progress) -> None:
    """Run one Ray task (1 CPU) per shard job, reporting each shard's items as it finishes; a
    task's error is raised as the worker raised it.

    Connects to the cluster at ``address`` (``"auto"``: the one running on this machine) when
    given, else starts a local Ray with ``num_cpus=workers``; a Ray this process had already
    initialised is used as it is. Only a Ray initialised here is shut down (for a cluster that
    disconnects this driver and leaves the cluster running).
    """
    if not jobs:
        return
    ray = _import_ray()
    own = not ray.is_initialized()
    if own:
        if address:
            ray.init(address=address)
        else:  # "local": a new instance even when RAY_ADDRESS is set or a cluster runs here
            ray.init(address="local", num_cpus=workers, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1)(run_shard)
        pending = [task.remote(job) for job in jobs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                summary = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:  # the worker's own error, as a pool raises it
                raise e.cause from e
            progress(summary["items"])
    finally:
        if own:
            ray.shutdown()


def _import_ray() -> Any:
    """The ``ray`` module, imported only when a build asks for it."""
    try:
        import ray
    except ImportError:
        raise BuildError('ray: Ray is not installed; pip install -e ".[ray]"', param="distributor") from None
    return ray
