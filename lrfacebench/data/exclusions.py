"""A reviewer's exclusion list: faces to drop from a build, named by face id or by source, frame and
box (so that a decision survives a rebuild that numbers the faces differently). A rerun of the
build with ``--exclude`` applies it; the union of every list given is kept in ``OUT/exclusions.csv``."""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lrfacebench.data.detect import box_iou
from lrfacebench.data.manifest import write_csv
from lrfacebench.data.sources.base import Problem


@dataclass
class Exclusions:
    """A reviewer's decisions: face ids, or (source, frame, box) matched by IoU >= ``min_iou``.

    Read from CSV files with a header holding ``face_id`` (or ``candidate``) and/or
    ``source,x1,y1,x2,y2`` (``frame`` optional) -- rows copied from ``manifest.csv`` or
    ``rejected.csv`` work as they are -- or from plain text files with one face id per line
    (``#`` starts a comment).
    """

    face_ids: set[str] = field(default_factory=set)
    boxes: list[tuple[str, str, tuple[float, float, float, float]]] = field(default_factory=list)
    min_iou: float = 0.5

    def __len__(self) -> int:
        return len(self.face_ids) + len(self.boxes)

    @classmethod
    def read(cls, paths: Iterable[Path]) -> tuple["Exclusions", list[Problem]]:
        ex, problems = cls(), []
        for path in paths:
            text = path.read_text(encoding="utf-8", errors="replace")
            first = text.lstrip().split("\n", 1)[0]
            if "," in first:
                ex._read_csv(path, text, problems)
            else:
                for line in text.splitlines():
                    line = line.split("#", 1)[0].strip()
                    if line and line not in ("face_id", "candidate"):
                        ex.face_ids.add(line)
        return ex, problems

    def _read_csv(self, path: Path, text: str, problems: list[Problem]) -> None:
        reader = csv.DictReader(StringIO(text))
        cols = set(reader.fieldnames or ())
        id_col = "face_id" if "face_id" in cols else ("candidate" if "candidate" in cols else None)
        has_box = {"source", "x1", "y1", "x2", "y2"} <= cols
        if id_col is None and not has_box:
            problems.append(Problem(path.name, "1", "exclusion CSV needs face_id or source,x1,y1,x2,y2 columns"))
            return
        for n, row in enumerate(reader, 2):
            if id_col and (row.get(id_col) or "").strip():
                self.face_ids.add(row[id_col].strip())
                continue
            try:
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                frame = (row.get("frame") or "").strip()
                self.boxes.append((row["source"].strip(), frame, box))  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError) as e:
                problems.append(Problem(path.name, str(n), f"bad exclusion row: {e}"))

    def write(self, path: Path) -> None:
        rows = [{"face_id": f} for f in sorted(self.face_ids)]
        rows += [{"source": s, "frame": fr, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}
                 for s, fr, b in self.boxes]
        write_csv(path, ("face_id", "source", "frame", "x1", "y1", "x2", "y2"), rows)

    def union(self, other: "Exclusions") -> "Exclusions":
        boxes = self.boxes + [b for b in other.boxes if b not in self.boxes]
        return Exclusions(self.face_ids | other.face_ids, boxes, self.min_iou)

    def match(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Face ids of ``rows`` (manifest rows) that the exclusions name."""
        hit = {r["face_id"] for r in rows if r["face_id"] in self.face_ids}
        by_src: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_src[(r["source"], str(r["frame"]))].append(r)
        for source, frame, box in self.boxes:
            for r in by_src.get((source, frame), []):
                other = np.array([[r["x1"], r["y1"], r["x2"], r["y2"]]], dtype=np.float64)
                if box_iou(np.array([box]), other)[0, 0] >= self.min_iou:
                    hit.add(r["face_id"])
        return hit
