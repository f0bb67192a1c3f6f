"""The plan of a build: the source reader's items in build order, cut into shards of
``build.shard_size`` items. It never depends on ``--workers`` or ``--shard``, so every job of a
build (and every restart) cuts the same shards; ``shards/sNNNNN.json`` marks a shard as done."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrfacebench.data.recipe import BuildConfig
from lrfacebench.data.sources import get_source
from lrfacebench.data.sources.base import Item, Pair, Problem
from lrfacebench.data.tracks import check_items
from lrfacebench.io import sha256_json


@dataclass
class BuildPlan:
    """The items of a build in order, cut into shards; ``problems`` found by the reader and the
    protocol's verification ``pairs`` of items (written by the merge, not part of the shards)."""

    source: str
    kind: str
    root: Path
    items: list[Item]
    problems: list[Problem]
    files: list[Path]
    shard_size: int
    pairs: list[Pair] = field(default_factory=list)

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self.items) / self.shard_size)

    def shard(self, index: int) -> list[Item]:
        return self.items[index * self.shard_size:(index + 1) * self.shard_size]

    def digest(self) -> str:
        return sha256_json({"items": [it.to_json() for it in self.items], "shard_size": self.shard_size})


def make_plan(cfg: BuildConfig, root: Path) -> BuildPlan:
    """Scan the source (the reader's official layout) and cut its items into shards."""
    name = cfg.source.get("name", cfg.name)
    reader = get_source(name)
    scan = reader.scan(root, cfg.reader_options())
    items = scan.items[: cfg.build.limit] if cfg.build.limit > 0 else scan.items
    if cfg.build.shard_size < 1:
        raise ValueError(f"build.shard_size must be >= 1, got {cfg.build.shard_size}")
    if cfg.tracks.enabled:
        check_items(items)
    return BuildPlan(name, reader.KIND, scan.root or root, items, scan.problems, scan.files, cfg.build.shard_size,
                     scan.pairs)


def shard_path(out: Path, index: int) -> Path:
    """``out/shards/sNNNNN.json``: shard ``index``'s records, and its done-marker."""
    return out / "shards" / f"s{index:05d}.json"


def load_shards(out: Path, n_shards: int) -> list[dict[str, Any]]:
    """The records of every shard, in plan order."""
    return [json.loads(shard_path(out, i).read_text()) for i in range(n_shards)]


def done_shards(out: Path, n_shards: int, plan_hash: str) -> set[int]:
    """Indices of shards whose done-marker exists and belongs to this plan."""
    done = set()
    for i in range(n_shards):
        p = shard_path(out, i)
        if p.is_file():
            try:
                if json.loads(p.read_text()).get("plan_hash") == plan_hash:
                    done.add(i)
            except (OSError, json.JSONDecodeError):
                pass  # cannot happen with atomic writes; redo the shard if it does
    return done
