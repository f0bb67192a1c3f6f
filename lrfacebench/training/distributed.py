"""Data-parallel training under ``torchrun`` that leaves methods unaware of it.

Rank 0's parameters and buffers are broadcast once; every optimizer then averages its gradients
across ranks right before it steps (a ``register_step_pre_hook``), which is what DDP computes,
without wrapping the nets. Floating buffers (BatchNorm statistics) and the logged loss values are
averaged after every step.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from lrfacebench.methods import Method


def average(tensors: list[torch.Tensor], world_size: int) -> None:
    """All-reduce-average ``tensors`` in place, one flat buffer per dtype."""
    by_dtype: dict[Any, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= world_size
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def make_distributed(method: Method, world_size: int) -> None:
    """Keep the replicas of ``method`` identical across ``world_size`` processes.

    Deviation from DDP: a method that clips gradients before ``step()`` clips the local gradients.
    """
    for net in method.nets.values():
        for t in [*net.parameters(), *net.buffers()]:
            dist.broadcast(t.data, 0)

    def hook(opt: Any, args: Any, kwargs: Any) -> None:
        average([p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None], world_size)

    for opt in method.optimizers.values():
        opt.register_step_pre_hook(hook)


def sync_buffers(method: Method, world_size: int) -> None:
    """Average every floating buffer (BatchNorm statistics) of every net across the ranks."""
    bufs = [b for net in method.nets.values() for b in net.buffers() if b.is_floating_point()]
    if bufs:
        average(bufs, world_size)


def average_losses(losses: dict[str, float], device: torch.device, world_size: int) -> dict[str, float]:
    """The mean over the ranks of each logged loss value."""
    keys = sorted(losses)
    t = torch.tensor([losses[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world_size for k, v in zip(keys, t.tolist())}


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` when not distributed)."""
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(world_size: int) -> None:
    """Wait for every rank (nothing to wait for when not distributed)."""
    if world_size > 1:
        dist.barrier()
