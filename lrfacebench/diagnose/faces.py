"""The run a diagnosis looks at, and the faces it feeds the run's nets.

Faces are float in [0,1] on the CPU: genuine LR ``(N,3,16,16)``, HR ``(K,3,64,64)`` and
artificial LR ``(K,3,16,16)`` = the quantised ``DS`` of the HR faces (as the benchmark makes it).
"""
from __future__ import annotations

import dataclasses
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

# At most this many of a run's training faces are looked at (evenly spaced), so a diagnosis of a
# paper-scale run (CelebA, WIDER FACE) decodes a few thousand images and not hundreds of thousands.
TRAIN_FACES = 2000


@dataclass
class Faces:
    """The faces a diagnosis looks at, float in [0,1] on the CPU.

    genuine_test: ``(N,3,16,16)`` genuine LR test faces; genuine_train: ``(M,3,16,16)`` genuine LR training
    faces; hr: ``(K,3,64,64)`` HR test faces; artificial: ``(K,3,16,16)`` = to_uint8(DS(hr))/255;
    hr_train: ``(J,3,64,64)`` the run's HR training faces.
    sources: where each set came from.
    """

    genuine_test: torch.Tensor
    genuine_train: torch.Tensor
    hr: torch.Tensor
    artificial: torch.Tensor
    hr_train: torch.Tensor
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


def training_faces(run: Path, kind: str) -> FaceList:
    """The run's own training faces of ``kind`` (``"lr"``: genuine LR, ``"hr"``: HR; env.json's
    ``data``); the sample's training split when the run names none or its folder is not here."""
    env = io.read_json(run / "env.json") if (run / "env.json").is_file() else {}
    data = env.get("data", {}).get(kind) or {}
    source, splits = data.get("source", "sample"), tuple(data.get("splits", ("train",)))
    if source == "sample":
        return facelib.list_sample(kind, splits)
    if (Path(source) / "manifest.csv").is_file():
        return facelib.list_dataset(Path(source), kind, splits)
    log.warning("the run's %s training set %s is not here: using the sample's training faces", kind, source)
    return facelib.list_sample(kind, ("train",))


def spaced_subset(faces: FaceList, n: int) -> FaceList:
    """``faces`` itself when it has at most ``n`` rows, else ``n`` evenly spaced rows of it."""
    if len(faces) <= n:
        return faces
    keep = [round(i * (len(faces) - 1) / (n - 1)) for i in range(n)] if n > 1 else [0]
    return dataclasses.replace(faces, paths=[faces.paths[i] for i in keep], names=[faces.names[i] for i in keep],
                               labels=[faces.labels[i] for i in keep])


def artificial_lr(hr: torch.Tensor) -> torch.Tensor:
    """Artificial LR as the benchmark makes it: ``(N,3,64,64)`` [0,1] -> quantised DS ``(N,3,16,16)``
    [0,1]."""
    return quantise(downsample(hr))


def load_diagnosis_faces(run: Path, genuine: Path | None, reference: Path | None) -> Faces:
    """Genuine test, genuine training, HR test and HR training faces (``--genuine``/``--reference``
    replace the sample's test faces), decoded to float in [0,1]."""
    lists = {"genuine_test": face_list(genuine, "lr", ("test",)) if genuine
             else facelib.list_sample("lr", ("test",)),
             "genuine_train": spaced_subset(training_faces(run, "lr"), TRAIN_FACES),
             "hr_train": spaced_subset(training_faces(run, "hr"), TRAIN_FACES),
             "hr": face_list(reference, "hr", ("test",)) if reference
             else facelib.list_sample("hr", ("test",))}
    images = {k: to_unit_float(facelib.load_faces(v).images) for k, v in lists.items()}
    return Faces(genuine_test=images["genuine_test"], genuine_train=images["genuine_train"], hr=images["hr"],
                 artificial=artificial_lr(images["hr"]), hr_train=images["hr_train"],
                 sources={k: f"{v.source} ({', '.join(v.splits)})" for k, v in lists.items()})
