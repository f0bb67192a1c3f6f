"""Training batches drawn on the device from resident uint8 face sets, with no per-image Python work.

Each stream (HR, identity-labelled HR, genuine LR) is one index tensor per step into a resident
``(N,3,S,S)`` uint8 tensor, then a float conversion to [0,1]; ``lr_artificial = DS(hr)`` is computed
on the device and quantised to uint8 levels (clamped to [0,1]) like every stored LR face.
"""
from __future__ import annotations

import logging

import torch

from lrfacebench.data.faces import FaceSet
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.errors import DatasetError
from lrfacebench.methods import Batch, Stage
from lrfacebench.runtime import derive_seed

log = logging.getLogger(__name__)


def _fits_on(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < 0.25 * free


class _Stream:
    """Epoch permutations over ``n`` items, shared by all ranks; rank ``r`` of ``w`` takes the
    ``r``-th slice of each global batch, so an epoch is seen once across the ranks."""

    def __init__(self, n: int, seed: int, name: str, device: torch.device) -> None:
        self.n, self.seed, self.name, self.device = n, seed, name, device
        self._perms: dict[tuple[int, int], torch.Tensor] = {}

    def _perm(self, stage_index: int, epoch: int) -> torch.Tensor:
        key = (stage_index, epoch)
        if key not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator(device=self.device)
            g.manual_seed(derive_seed(self.seed, self.name, stage_index, epoch))
            self._perms[key] = torch.randperm(self.n, generator=g, device=self.device)
        return self._perms[key]

    def indices(self, stage_index: int, step: int, batch: int, rank: int, world: int) -> torch.Tensor:
        """``(batch,)`` int64 indices for ``step`` (0-based) of stage ``stage_index``."""
        start = (step * world + rank) * batch
        first, last = start // self.n, (start + batch - 1) // self.n
        parts = []
        for epoch in range(first, last + 1):  # usually one epoch, two at an epoch boundary
            lo = max(start, epoch * self.n) - epoch * self.n
            hi = min(start + batch, (epoch + 1) * self.n) - epoch * self.n
            parts.append(self._perm(stage_index, epoch)[lo:hi])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class Feeder:
    """Draws :class:`Batch` objects on ``device`` from resident uint8 face sets.

    Batches are a pure function of ``(seed, stage_index, step, rank, world_size)``, so a resumed
    run sees exactly the batches an uninterrupted run sees. The uint8 tensors live on the
    device when they fit (a quarter of free GPU memory), otherwise in pinned host memory.
    """

    def __init__(self, hr: FaceSet | None, lr: FaceSet | None, device: torch.device | str,
                 seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 hflip: bool = False) -> None:
        self.device = torch.device(device)
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.seed, self.hflip = seed, hflip
        self.hr = self._place(hr.images) if hr is not None else None
        self.identity = hr.identity.to(self.hr.device) if hr is not None else None
        self.lr = self._place(lr.images) if lr is not None else None
        # stages that need identities draw from the labelled HR faces only, so that every batch
        # (on every rank) has a label for each face and no step is ever skipped
        self.labelled = (torch.nonzero(self.identity >= 0).flatten()
                         if self.identity is not None else None)
        self._streams = {name: _Stream(len(t), seed, name, t.device)
                         for name, t in (("hr", self.hr), ("lr", self.lr), ("hr_labelled", self.labelled))
                         if t is not None and len(t)}

    def _place(self, t: torch.Tensor) -> torch.Tensor:
        if _fits_on(self.device, t.numel() * t.element_size()):
            return t.to(self.device)
        log.info("keeping %s faces in pinned host memory (too large for the GPU)", tuple(t.shape))
        return t.pin_memory()

    def _take(self, data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return data[idx].to(self.device, non_blocking=True)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _image(self, u8: torch.Tensor, stream: str, stage_index: int, step: int) -> torch.Tensor:
        """uint8 faces -> float in [0,1]; with ``hflip``, each mirrored with probability 1/2
        (a pure function of seed, stream, stage, step and rank, like the indices)."""
        x = u8.float().div_(255.0)
        if self.hflip:
            g = torch.Generator(device=x.device)
            g.manual_seed(derive_seed(self.seed, "hflip", stream, stage_index, step, self.rank))
            flip = torch.rand(len(x), generator=g, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return self._layout(x)

    def provides(self) -> set[str]:
        """The Batch streams this feeder can fill (``identity`` only if some HR face has one)."""
        out = {"hr", "lr_artificial"} if self.hr is not None else set()
        out |= {"identity"} if "hr_labelled" in self._streams else set()
        return out | ({"lr_genuine"} if self.lr is not None else set())

    def batch(self, stage: Stage, stage_index: int, step: int) -> Batch:
        """The batch of ``step`` (0-based) of ``stage``: only the streams in ``stage.needs``."""
        needs, b = set(stage.needs), stage.batch_size
        missing = needs - self.provides()
        if missing == {"identity"}:
            raise DatasetError(f"stage {stage.name!r} needs identity labels but no HR face has one")
        if missing:
            raise DatasetError(f"stage {stage.name!r} needs {sorted(missing)} but no such faces were loaded")
        out = Batch()
        if needs & {"hr", "identity", "lr_artificial"}:
            stream = "hr_labelled" if "identity" in needs else "hr"
            idx = self._streams[stream].indices(stage_index, step, b, self.rank, self.world_size)
            if stream == "hr_labelled":
                idx = self.labelled[idx]
            hr = self._image(self._take(self.hr, idx), "hr", stage_index, step)  # DS pairs follow
            if "hr" in needs:
                out.hr = hr
            if "identity" in needs:
                out.identity = self._take(self.identity, idx)
            if "lr_artificial" in needs:
                # quantised like every stored LR image and Table 3's inputs: an unquantised x_a
                # (38 % of the sample's faces had pixels outside [0,1]) tells D "artificial" by itself
                out.lr_artificial = self._layout(to_uint8(downsample(hr)).float().div_(255.0))
        if "lr_genuine" in needs:
            idx = self._streams["lr"].indices(stage_index, step, b, self.rank, self.world_size)
            out.lr_genuine = self._image(self._take(self.lr, idx), "lr", stage_index, step)
        return out
