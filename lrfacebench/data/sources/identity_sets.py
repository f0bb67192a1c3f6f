"""What the readers of pre-cropped, identity-labelled face releases share (``tinyface``,
``survface``): each image is one face, kept whole (no detection; the build's size and junk
filters still judge it); identities come from identity folders or from the person id that starts
an official file name (``<person>_<rest>.jpg``); test roles come from role folders and Matlab
protocol lists, read with ``scipy.io.loadmat``.

Unusable protocol rows, listed images that are missing and images that no list names become
:class:`~lrfacebench.data.sources.base.Problem` rows (file, ``row N``, reason) and are skipped;
a missing role folder or an unreadable protocol file is a
:class:`~lrfacebench.data.sources.base.LayoutError` (a test set without its protocol would
silently be another test set).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy.io import loadmat

from lrfacebench.data.sources.base import Item, LayoutError, Problem, Scan, rel, whole_image_face
from lrfacebench.io import list_images


class Listed(NamedTuple):
    """One usable row of a protocol list: ``row N``, the image's file name and its protocol id."""

    row: str
    name: str
    pid: int


def release_root(root: Path, top: str, markers: Sequence[str], layout: str) -> Path:
    """The release folder: ``root`` when it holds one of the ``markers`` folders, else ``root/top``
    (the folder the official archive unpacks to)."""
    for base in (root, root / top):
        if any((base / m).is_dir() for m in markers):
            return base
    raise LayoutError(f"expected {' or '.join(markers)} in {root} or {root / top} (official layout: {layout})")


def check_splits(splits: Sequence[str], known: Sequence[str], source: str) -> None:
    """``ValueError`` naming the known splits when ``splits`` holds another."""
    if bad := sorted(set(splits) - set(known)):
        raise ValueError(f"{source} splits must be among {list(known)}, got {bad}")


def role_dir(base: Path, name: str, layout: str) -> Path:
    """The role folder ``base/name``; a missing one is a :class:`LayoutError`."""
    d = base / name
    if not d.is_dir():
        raise LayoutError(f"expected the folder {d} (official layout: {layout}); choose other splits with "
                          "-o source.splits=[...]")
    return d


def person_of(name: str) -> str:
    """The person id that starts an official file name (``10002_cam3_1.jpg`` -> ``10002``), else ``""``."""
    head, sep, _ = name.partition("_")
    return head if sep and head.isdecimal() else ""


def face_item(base: Path, path: Path, split: str, identity: str, ref: str = "") -> Item:
    """The one face of a pre-cropped image: the whole image, with its split and identity."""
    source = rel(path, base)
    return Item(source=source, mode="gt", split=split, identity=identity,
                annots=(whole_image_face(ref or source),))


def identity_folders(base: Path, name: str, split: str, namespace: str, layout: str, out: Scan) -> list[Item]:
    """Every image of ``base/name/<identity>/`` as a face of ``<namespace>:<identity>``; images
    outside an identity folder are reported and skipped."""
    d = role_dir(base, name, layout)
    items = []
    for path in list_images(d):
        parts = path.relative_to(d).parts
        if len(parts) != 2:
            out.problems.append(Problem(rel(path, base), "", f"not in an identity folder {name}/<identity>/; skipped"))
            continue
        items.append(face_item(base, path, split, f"{namespace}:{parts[0]}"))
    return items


def role_faces(base: Path, name: str, split: str, namespace: str | None, layout: str) -> list[Item]:
    """Every image of the role folder ``base/name``; identity ``<namespace>:<person>`` from the file
    name's person id when ``namespace`` is given (else none, as for distractors)."""
    return [face_item(base, p, split, f"{namespace}:{person}" if namespace and (person := person_of(p.name)) else "")
            for p in list_images(role_dir(base, name, layout))]


def read_mat(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The variables ``keys`` of a Matlab file; an unreadable file or a missing variable is a
    :class:`LayoutError`."""
    if not path.is_file():
        raise LayoutError(f"protocol file {path} not found")
    try:
        data = loadmat(path)
    except Exception as e:  # noqa: BLE001 -- scipy raises many kinds for a damaged file; say which file
        raise LayoutError(f"{path}: cannot read the Matlab file: {type(e).__name__}: {e}") from None
    if missing := [k for k in keys if k not in data]:
        found = sorted(k for k in data if not k.startswith("__"))
        raise LayoutError(f"{path}: no variable(s) {missing}; found {found}")
    return {k: data[k] for k in keys}


def _unwrap(cell: Any) -> Any:
    """The one value inside nested one-element arrays (how ``loadmat`` returns a cell's content)."""
    while isinstance(cell, np.ndarray) and cell.size == 1:
        cell = cell.reshape(-1)[0]
    return cell


def cell_text(cell: Any) -> str:
    """The string in one cell of a Matlab cell array of file names (``""`` when it holds none)."""
    text = _unwrap(cell)
    return text.strip() if isinstance(text, str) else ""


def cells(data: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    """The cell array ``key`` of a protocol file; any other type is a :class:`LayoutError`."""
    a = data[key]
    if a.dtype != object:
        raise LayoutError(f"{path}: {key} is not a cell array of file names (dtype {a.dtype})")
    return a


def protocol_list(path: Path, names_key: str, ids_key: str, where: str, out: Scan) -> list[Listed]:
    """The usable rows of an ``<set>_img_ID_pairs.mat`` list: the cell array ``names_key`` of file
    names and the numbers ``ids_key`` of their identities, row by row. A row without a file name,
    with an id that is no finite integer or with a name listed before is reported and skipped."""
    data = read_mat(path, (names_key, ids_key))
    out.files.append(path)
    names, ids = cells(data, names_key, path).reshape(-1), data[ids_key].reshape(-1)
    if len(names) != len(ids):
        raise LayoutError(f"{path}: {len(names)} file names in {names_key} but {len(ids)} ids in {ids_key}")
    rows, seen = [], set()
    for n, (cell, value) in enumerate(zip(names, ids), 1):
        name, pid, row = cell_text(cell), _integer(value), f"row {n}"
        reason = ("no file name" if not name else f"{name} is listed twice" if name in seen
                  else f"{name}: id {value} is not an integer" if pid is None else "")
        if reason:
            out.problems.append(Problem(where, row, f"{reason}; skipped"))
            continue
        seen.add(name)
        rows.append(Listed(row, name, pid))
    return rows


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is a finite whole number, else ``None``."""
    try:
        v = float(_unwrap(value))
    except (TypeError, ValueError):
        return None
    return int(v) if math.isfinite(v) and v == int(v) else None


class IdLinks:
    """The protocol ids and the file names' person ids of one test set, which must name each
    other one to one (a probe is matched to the gallery by its protocol id)."""

    def __init__(self) -> None:
        self._person: dict[int, str] = {}
        self._pid: dict[str, int] = {}

    def conflict(self, pid: int, person: str) -> str:
        """Why ``pid`` cannot be person ``person`` (``""`` when it can; the link is then kept)."""
        known_person, known_pid = self._person.get(pid, person), self._pid.get(person, pid)
        if known_person != person:
            return f"id {pid} names person {known_person} in an earlier row"
        if known_pid != pid:
            return f"person {person} has id {known_pid} in an earlier row"
        self._person[pid], self._pid[person] = person, pid
        return ""


def listed_faces(base: Path, name: str, rows: list[Listed], split: str, namespace: str, where: str,
                 links: IdLinks, layout: str, out: Scan) -> list[Item]:
    """The faces of a protocol list in its row order, from the role folder ``base/name``, each of
    identity ``<namespace>:<person>`` (the file name's person id). Rows whose name has no person
    id, whose id disagrees with ``links`` or whose image is missing, and images of the folder that
    no row lists, are reported and skipped."""
    d = role_dir(base, name, layout)
    present = {rel(p, d): p for p in list_images(d)}
    items = []
    for r in rows:
        person = person_of(r.name)
        if not person:
            reason = "the file name starts with no person id (<person>_...)"
        elif r.name not in present:
            reason = f"image {name}/{r.name} not found"
        else:
            reason = links.conflict(r.pid, person)
        if reason:
            out.problems.append(Problem(where, r.row, f"{r.name}: {reason}; skipped"))
            continue
        items.append(face_item(base, present.pop(r.name), split, f"{namespace}:{person}", f"{where}:{r.row}"))
    out.problems += [Problem(rel(p, base), "", f"not listed in {where}; skipped") for p in present.values()]
    return items
