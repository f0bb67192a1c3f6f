"""Rank-1 / CMC face identification on super-resolved faces (Table 2).

Protocol (methods.md §4): keep identities with at least 2 faces; in each of ``trials`` seeded
trials pick 1 random gallery face per identity, all other faces are probes; the feature of a
face is ``embed(x) + embed(hflip(x))``, L2-normalised; probes are ranked against the gallery by
cosine similarity. Rank of a probe = number of gallery faces at least as similar as its own
identity's gallery face (ties counted against the probe, so a constant embedder scores chance,
not 100%). Reported: mean and std (over trials, ``ddof=0``) of rank-1, the CMC curve averaged
over trials, the numbers of identities and probes.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lrfacebench import io
from lrfacebench.degrade import imresize
from lrfacebench.pixels import rgb_to_tensor

log = logging.getLogger(__name__)

# CSV columns that can name a face's file (compared by file stem with the images' stems)
FILE_COLUMNS = ("path", "file", "filename", "face_id", "hr64", "lr16", "crop")


@dataclass(frozen=True)
class Rank1Result:
    rank1_mean: float
    rank1_std: float
    per_trial: list[float]
    cmc: list[float]  # cmc[k-1] = fraction of probes whose identity is within the top k
    n_identities: int
    n_probes: int  # probes per trial (faces of kept identities minus one gallery face each)
    n_faces: int  # faces of kept identities
    n_excluded: int  # faces left out: no identity, or an identity with a single face
    trials: int
    seed: int
    extra: dict = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return (f"rank1;identities>=2faces;gallery=1/identity;trials={self.trials};seed={self.seed};"
                "feature=embed(x)+embed(hflip(x));l2;cosine")

    def rows(self) -> list[dict]:
        return [{"metric": "rank1", "value": self.rank1_mean, "std": self.rank1_std,
                 "n_images": self.n_faces, "n_identities": self.n_identities,
                 "n_probes": self.n_probes, "protocol": self.protocol, "higher_is_better": True,
                 **self.extra}]


def flip_features(embed: Callable, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """``embed(x) + embed(hflip(x))``, L2-normalised: ``(N,3,H,W)`` float in [0,1] -> ``(N,D)`` float32.

    ``embed`` maps a ``(B,3,H,W)`` float tensor in [0,1] to ``(B,D)`` (tensor or array).
    """
    images = torch.as_tensor(images)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            f = torch.as_tensor(embed(x)).float() + torch.as_tensor(embed(x.flip(-1))).float()
            out.append(torch.nn.functional.normalize(f.reshape(len(x), -1), dim=1).cpu())
    return torch.cat(out).numpy()


def rank1_from_features(feats: np.ndarray, labels: Sequence, trials: int = 10,
                        seed: int = 0) -> Rank1Result:
    """Run the protocol on L2-normalised features ``(N,D)`` with identity labels (``""``/None = unknown)."""
    labels = np.array(["" if lab is None else str(lab) for lab in labels])
    if len(labels) != len(feats):
        raise ValueError(f"{len(feats)} features but {len(labels)} labels")
    names, counts = np.unique(labels[labels != ""], return_counts=True)
    kept = names[counts >= 2]
    if len(kept) < 2:
        raise ValueError(f"rank-1 needs at least 2 identities with >= 2 faces, found {len(kept)}")
    groups = [np.flatnonzero(labels == name) for name in kept]
    members = np.concatenate(groups)
    identity = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    rng = np.random.default_rng(seed)
    rank1, cmcs = [], []
    for _ in range(trials):
        gallery = np.array([rng.choice(g) for g in groups])
        is_probe = ~np.isin(members, gallery)
        probes, probe_id = members[is_probe], identity[is_probe]
        sim = feats[probes] @ feats[gallery].T  # (P, G)
        own = sim[np.arange(len(probes)), probe_id]
        rank = (sim >= own[:, None]).sum(axis=1)  # 1-based; ties count against the probe
        cmc = np.cumsum(np.bincount(rank - 1, minlength=len(kept))) / len(probes)
        cmcs.append(cmc)
        rank1.append(float(cmc[0]))
    n_excluded = len(labels) - len(members)
    if n_excluded:
        log.info("rank-1: %d faces left out (no identity or a single face)", n_excluded)
    return Rank1Result(float(np.mean(rank1)), float(np.std(rank1)), rank1,
                       np.mean(cmcs, axis=0).tolist(), len(kept), int(len(members) - len(kept)),
                       int(len(members)), int(n_excluded), trials, seed)


def rank1_cmc(embed: Callable, images: torch.Tensor, labels: Sequence, trials: int = 10, seed: int = 0,
              batch_size: int = 256) -> Rank1Result:
    """Rank-1/CMC of faces ``(N,3,64,64)`` float in [0,1] with ``labels`` under ``embed``."""
    return rank1_from_features(flip_features(embed, images, batch_size), labels, trials, seed)


def read_identities(csv_path: str | Path) -> dict[str, str]:
    """File stem -> identity from a CSV with an ``identity`` column and one of :data:`FILE_COLUMNS`
    (e.g. a dataset ``manifest.csv``). Rows with an empty identity are ignored."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        key_col = next((c for c in FILE_COLUMNS if c in columns), None)
        if "identity" not in columns or key_col is None:
            raise ValueError(f"{csv_path}: needs an 'identity' column and one of {FILE_COLUMNS}; "
                             f"has {columns}")
        out: dict[str, str] = {}
        for row in reader:
            ident, key = (row.get("identity") or "").strip(), Path(row.get(key_col) or "").stem
            if not ident or not key:
                continue
            if out.setdefault(key, ident) != ident:
                raise ValueError(f"{csv_path}: {key!r} has two identities ({out[key]!r}, {ident!r})")
    return out


def faces_tensor(images: Sequence[np.ndarray], size: int = 64) -> tuple[torch.Tensor, int]:
    """RGB uint8 faces of any size -> ``((N,3,size,size) float in [0,1], number resized)``; faces of
    another size are resized with :func:`lrfacebench.degrade.imresize` (bicubic) and clamped."""
    out, resized = [], 0
    for rgb in images:
        x = rgb_to_tensor(rgb)
        if x.shape[-2:] != (size, size):
            x, resized = imresize(x, (size, size)).clamp(0, 1), resized + 1
        out.append(x)
    return torch.cat(out), resized


def read_labelled_faces(folder: str | Path, identities: dict[str, str], size: int = 64
                        ) -> tuple[torch.Tensor, list[str], list[str]]:
    """Faces below ``folder`` that have an identity: ``((N,3,size,size) float in [0,1], labels, names)``.

    Images are matched to ``identities`` by file stem; others are skipped (counted in the log).
    Images of another size are resized (:func:`faces_tensor`). Unreadable images raise
    ``ValueError`` naming the file.
    """
    files = io.list_images(folder)
    if not files:
        raise ValueError(f"{folder}: no images")
    named = [p for p in files if p.stem in identities]
    if not named:
        raise ValueError(f"{folder}: none of its {len(files)} images is named in the identity list")
    rgbs = []
    for p in named:
        try:
            rgbs.append(io.read_rgb(p))
        except io.UnreadableImage as e:
            raise ValueError(f"{p}: cannot read ({e})") from None
    images, resized = faces_tensor(rgbs, size)
    if len(files) > len(named):
        log.info("rank-1: %d of %d images have no identity and are skipped", len(files) - len(named),
                 len(files))
    if resized:
        log.warning("rank-1: %d images were not %dx%d and were resized (bicubic)", resized, size, size)
    return images, [identities[p.stem] for p in named], [p.stem for p in named]
