"""The run a diagnosis looks at, and the faces it feeds the run's nets.

Faces are float in [0,1] on the CPU: genuine LR ``(N,3,16,16)``, HR ``(K,3,64,64)`` and
artificial LR ``(K,3,16,16)`` = the quantised ``DS`` of the HR faces (as the benchmark makes it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lrfacebench import io
from lrfacebench.data import faces as facelib
from lrfacebench.data.faces import FaceList
from lrfacebench.degrade import downsample
from lrfacebench.errors import DiagnoseError
from lrfacebench.methods import Method
from lrfacebench.pixels import quantise, to_unit_float
from lrfacebench.runs import FINAL, list_checkpoints, load_method

log = logging.getLogger(__name__)


@dataclass
class Faces:
    """The faces a diagnosis looks at, float in [0,1] on the CPU.

    genuine_test: ``(N,3,16,16)`` genuine LR test faces; genuine_train: ``(M,3,16,16)`` genuine LR training
    faces; hr: ``(K,3,64,64)`` HR test faces; artificial: ``(K,3,16,16)`` = to_uint8(DS(hr))/255.
    sources: where each set came from.
    """

    genuine_test: torch.Tensor
    genuine_train: torch.Tensor
    hr: torch.Tensor
    artificial: torch.Tensor
    sources: dict[str, str]


def check_run(run: Path) -> None:
    """Raise :class:`DiagnoseError` unless ``run`` is a run directory written by ``lrfb train``."""
    if not run.is_dir():
        raise DiagnoseError(f"{run}: no such run directory")
    if not (run / "config.json").is_file():
        raise DiagnoseError(f"{run}: not a training run (no config.json; expected a folder written by "
                            "`lrfb train`)")
    if not list_checkpoints(run) and not (run / FINAL).is_file():
        raise DiagnoseError(f"{run}: no checkpoint and no final.pt yet (has training started?)")


def load_run_method(run: Path, device: str) -> tuple[Method, str]:
    """(method in eval mode, what was loaded): the newest loadable checkpoint with every net, else
    ``final.pt`` (deployed nets only)."""
    for _, path in reversed(list_checkpoints(run)):
        try:
            return load_method(path, device), path.relative_to(run).as_posix()
        except ValueError:  # a broken checkpoint (load_method says so): try an older one
            continue
    return load_method(run / FINAL, device), FINAL


def face_list(folder: Path, kind: str, splits: tuple[str, ...]) -> FaceList:
    """A built dataset's ``splits`` (a folder with manifest.csv), else every image of a plain folder."""
    if (folder / "manifest.csv").is_file():
        return facelib.list_dataset(folder, kind, splits)
    return facelib.list_folder(folder, kind)


def training_genuine(run: Path) -> FaceList:
    """The run's own genuine LR training faces (env.json's ``data.lr``); the sample's training
    split when the run names none or its folder is not here."""
    env = io.read_json(run / "env.json") if (run / "env.json").is_file() else {}
    lr = env.get("data", {}).get("lr") or {}
    source, splits = lr.get("source", "sample"), tuple(lr.get("splits", ("train",)))
    if source == "sample":
        return facelib.list_sample("lr", splits)
    if (Path(source) / "manifest.csv").is_file():
        return facelib.list_dataset(Path(source), "lr", splits)
    log.warning("the run's genuine training set %s is not here: using the sample's training faces", source)
    return facelib.list_sample("lr", ("train",))


def artificial_lr(hr: torch.Tensor) -> torch.Tensor:
    """Artificial LR as the benchmark makes it: ``(N,3,64,64)`` [0,1] -> quantised DS ``(N,3,16,16)``
    [0,1]."""
    return quantise(downsample(hr))


def load_diagnosis_faces(run: Path, genuine: Path | None, reference: Path | None) -> Faces:
    """Genuine test, genuine training and HR test faces (``--genuine``/``--reference`` replace
    the sample's test faces), decoded to float in [0,1]."""
    lists = {"genuine_test": face_list(genuine, "lr", ("test",)) if genuine
             else facelib.list_sample("lr", ("test",)),
             "genuine_train": training_genuine(run),
             "hr": face_list(reference, "hr", ("test",)) if reference
             else facelib.list_sample("hr", ("test",))}
    images = {k: to_unit_float(facelib.load_faces(v).images) for k, v in lists.items()}
    return Faces(genuine_test=images["genuine_test"], genuine_train=images["genuine_train"], hr=images["hr"],
                 artificial=artificial_lr(images["hr"]),
                 sources={k: f"{v.source} ({', '.join(v.splits)})" for k, v in lists.items()})
