"""Training batches drawn on the device from resident uint8 face sets, with no per-image Python work.

Each stream (HR, identity-labelled HR, genuine LR, identity-labelled genuine LR) is one index tensor
per step into a resident ``(N,3,S,S)`` uint8 tensor, then a float conversion to [0,1];
``lr_artificial = DS(hr)`` is computed on the device and quantised to uint8 levels (clamped to
[0,1]) like every stored LR face. HR landmarks (when the face set has them) and identities follow
their faces, landmarks mirrored with them.
"""
from __future__ import annotations

import logging

import torch

from lrfacebench.data.faces import FaceSet
from lrfacebench.data.landmarks import mirror_landmarks
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.errors import DatasetError
from lrfacebench.methods import Batch, Stage
from lrfacebench.methods.base import LANDMARKS, LR_IDENTITY
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
        self.landmarks = (hr.landmarks.to(self.hr.device)
                          if hr is not None and hr.landmarks is not None else None)
        self.lr = self._place(lr.images) if lr is not None else None
        self.lr_identity = lr.identity.to(self.lr.device) if lr is not None else None
        # stages that need identities (landmarks) draw from the labelled (landmarked) faces only,
        # so that every batch (on every rank) has them for each face and no step is skipped
        self.labelled = (torch.nonzero(self.identity >= 0).flatten()
                         if self.identity is not None else None)
        self.lr_labelled = (torch.nonzero(self.lr_identity >= 0).flatten()
                            if self.lr_identity is not None else None)
        self.landmarked = (torch.nonzero(torch.isfinite(self.landmarks).flatten(1).all(1)).flatten()
                           if self.landmarks is not None else None)
        self._streams = {name: _Stream(len(t), seed, name, t.device)
                         for name, t in (("hr", self.hr), ("lr", self.lr), ("hr_labelled", self.labelled),
                                         ("hr_landmarked", self.landmarked), ("lr_labelled", self.lr_labelled))
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

    def _flips(self, n: int, stream: str, stage_index: int, step: int, device: torch.device) -> torch.Tensor | None:
        """``(n,)`` bool: which faces are mirrored (probability 1/2 each, a pure function of seed,
        stream, stage, step and rank, like the indices); ``None`` without ``hflip``."""
        if not self.hflip:
            return None
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(self.seed, "hflip", stream, stage_index, step, self.rank))
        return torch.rand(n, generator=g, device=device) < 0.5

    def _image(self, u8: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        """uint8 faces -> float in [0,1], those where ``flip`` is set mirrored."""
        x = u8.float().div_(255.0)
        if flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return self._layout(x)

    def provides(self) -> set[str]:
        """The Batch streams this feeder can fill (``identity`` only if some HR face has one,
        ``landmarks`` only if some HR face has them, ``lr_identity`` only if some genuine LR face
        has an identity)."""
        out = {"hr", "lr_artificial"} if self.hr is not None else set()
        out |= {"identity"} if "hr_labelled" in self._streams else set()
        out |= {LANDMARKS} if "hr_landmarked" in self._streams else set()
        out |= {LR_IDENTITY} if "lr_labelled" in self._streams else set()
        return out | ({"lr_genuine"} if self.lr is not None else set())

    def batch(self, stage: Stage, stage_index: int, step: int) -> Batch:
        """The batch of ``step`` (0-based) of ``stage``: only the streams in ``stage.needs``."""
        needs, b = set(stage.needs), stage.batch_size
        missing = needs - self.provides()
        if missing == {"identity"}:
            raise DatasetError(f"stage {stage.name!r} needs identity labels but no HR face has one")
        if missing == {LANDMARKS}:
            raise DatasetError(f"stage {stage.name!r} needs HR landmarks but the HR faces have none")
        if missing == {LR_IDENTITY}:
            raise DatasetError(f"stage {stage.name!r} needs identity labels of genuine LR faces but no "
                               "genuine LR face has one (build an identity-labelled LR set with "
                               "`lrfb build-dataset tinyface|survface`)")
        if {"identity", LANDMARKS} <= needs:
            raise DatasetError(f"stage {stage.name!r}: a stage cannot need both identity and landmarks")
        if missing:
            raise DatasetError(f"stage {stage.name!r} needs {sorted(missing)} but no such faces were loaded")
        out = Batch()
        if needs & {"hr", "identity", "lr_artificial", LANDMARKS}:
            stream = "hr_labelled" if "identity" in needs else "hr_landmarked" if LANDMARKS in needs else "hr"
            idx = self._streams[stream].indices(stage_index, step, b, self.rank, self.world_size)
            if stream == "hr_labelled":
                idx = self.labelled[idx]
            elif stream == "hr_landmarked":
                idx = self.landmarked[idx]
            u8 = self._take(self.hr, idx)
            flip = self._flips(len(idx), "hr", stage_index, step, u8.device)
            hr = self._image(u8, flip)  # DS pairs follow
            if "hr" in needs:
                out.hr = hr
            if "identity" in needs:
                out.identity = self._take(self.identity, idx)
            if LANDMARKS in needs:
                points = self._take(self.landmarks, idx)
                out.landmarks = points if flip is None else mirror_landmarks(points, flip, hr.shape[-1])
            if "lr_artificial" in needs:
                # quantised like every stored LR image and Table 3's inputs: an unquantised x_a
                # (38 % of the sample's faces had pixels outside [0,1]) tells D "artificial" by itself
                out.lr_artificial = self._layout(to_uint8(downsample(hr)).float().div_(255.0))
        if needs & {"lr_genuine", LR_IDENTITY}:
            stream = "lr_labelled" if LR_IDENTITY in needs else "lr"
            idx = self._streams[stream].indices(stage_index, step, b, self.rank, self.world_size)
            if stream == "lr_labelled":
                idx = self.lr_labelled[idx]
                out.lr_identity = self._take(self.lr_identity, idx)
            if "lr_genuine" in needs:
                u8 = self._take(self.lr, idx)
                out.lr_genuine = self._image(u8, self._flips(len(idx), "lr", stage_index, step, u8.device))
        return out
