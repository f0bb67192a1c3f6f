"""The one schema of a built dataset's tables: ``manifest.csv`` (one row per kept face),
``rejected.csv`` (one row per rejected candidate), ``unreadable.csv`` (inputs that could not be
used) and, for sources with a verification protocol, ``pairs.csv`` (one row per pair of faces).
Paths in a manifest are relative to the dataset folder (posix).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Sequence

from lrfacebench.data.sources import rule as source_rule
from lrfacebench.io import atomic_path

# every manifest.csv starts with these columns; a source with a rule adds its own after them
COLUMNS = ("face_id", "source", "frame", "time_s", "track_id", "x1", "y1", "x2", "y2", "score", "width",
           "height", "identity", "split", "crop", "lr16", "hr64", "sha256")
REQUIRED_COLUMNS = ("face_id", "identity", "split", "lr16", "hr64")  # what training and benchmarks read
IMAGE_COLUMNS = ("crop", "lr16", "hr64")  # cells naming a face's PNG files ("" when absent)
REJECTED_COLUMNS = ("candidate", "reason", "source", "frame", "time_s", "track_id", "x1", "y1", "x2", "y2", "score",
                    "width", "height", "crop", "detail")
UNREADABLE_COLUMNS = ("file", "line", "reason")
# pair: 0-based row; same: 1 = same person; face_a/face_b: face ids ("" when that face was not kept)
PAIR_COLUMNS = ("pair", "same", "face_a", "face_b", "source_a", "source_b", "ref")


def manifest_columns(source: str) -> tuple[str, ...]:
    """:data:`COLUMNS`, then the extra columns of the source's rule (if any)."""
    rule = source_rule(source)
    return COLUMNS + (tuple(rule.columns) if rule else ())


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any] | Sequence[Any]]) -> None:
    """Write a CSV atomically (rows as dicts keyed by ``columns`` or as sequences)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns] if isinstance(r, dict) else list(r))
