"""Which faces the benchmark trains on and evaluates: roles resolved from ``--data NAME=DIR``.

Roles:
  train_hr    paired HR faces for training (CelebA ``train`` split)
  train_lr    genuine LR faces for training (WIDER FACE ``train`` split)
  reference   HR faces FID is measured against (CelebA ``test`` split); A-LR = DS(reference)
  genuine     genuine-LR test sets (LR-PIPA, LR-DukeMTMC, any set the user names)
  identity    genuine-LR test sets with identities (rank-1; LR-PIPA)
  artificial  paired HR test sets super-resolved from DS(HR) (Helen)
  paired      paired test sets whose LR side is not DS(HR): a degradation chain or shrunk photos
              (``lrfb build-dataset degraded``), or any folder with ``hr/`` and ``lr/``

Sets come from built datasets (``--data NAME=DIR``) or plain folders (``--reference DIR``,
``--genuine NAME=DIR``, ``--paired NAME=DIR``). Without any, everything comes from the embedded
sample (see :func:`sample_data`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from lrfacebench import io
from lrfacebench.data import faces as facelib
from lrfacebench.data.build import build
from lrfacebench.data.recipe import resolve_config
from lrfacebench.data.sources.sample import default_root
from lrfacebench.degrade import downsample, to_uint8
from lrfacebench.errors import DatasetError
from lrfacebench.pixels import to_unit_float

log = logging.getLogger(__name__)

# Dataset names with a fixed role; any other name is a genuine-LR test set.
NAMED_ROLES = {"celeba": ("train_hr", "reference"), "widerface": ("train_lr",), "helen": ("artificial",)}


@dataclass
class TestSet:
    """One evaluation set.

    faces: LR sets (genuine/identity) hold ``(N,3,16,16)`` uint8; artificial and paired sets
           ``(N,3,64,64)`` HR.
    lr:    paired sets only: their ``(N,3,16,16)`` uint8 LR inputs, face i of ``faces`` for face i.
    note:  how the set was made when it is not what the role name suggests (shown in the protocol).
    """

    name: str
    role: str
    faces: facelib.FaceSet
    split: str
    sha256: str
    note: str = ""
    lr: facelib.FaceSet | None = None

    def __len__(self) -> int:
        return len(self.faces)


@dataclass
class BenchData:
    train_hr: Path | None  # None = the embedded sample
    train_lr: Path | None
    reference: TestSet
    tests: list[TestSet] = field(default_factory=list)

    def of_role(self, role: str) -> list[TestSet]:
        return [t for t in self.tests if t.role == role]


def _test_set(name: str, role: str, faces: facelib.FaceList, split: str, note: str = "") -> TestSet:
    """The test set ``name`` of ``role``: the faces of ``faces``, decoded."""
    return TestSet(name, role, facelib.load_faces(faces), split, faces.sha256, note)


def _listing(root: Path, kind: facelib.Kind, splits: tuple[str, ...]) -> facelib.FaceList:
    """A built dataset (``manifest.csv``) by its splits, else every image of a plain folder."""
    if (root / "manifest.csv").is_file():
        return facelib.list_dataset(root, kind, splits)
    return facelib.list_folder(root, kind)


def paired_set(name: str, root: Path) -> TestSet:
    """A paired test set: a built dataset with ``hr64`` and ``lr16`` in every row (e.g. built by
    ``lrfb build-dataset degraded``), or a plain folder with ``hr/`` and ``lr/`` images of the
    same names (any sizes; resized to 64 and 16 by the project's rule)."""
    root = Path(root)
    if (root / "manifest.csv").is_file():
        hr, lr = (facelib.list_dataset(root, k, facelib.ALL_SPLITS) for k in ("hr", "lr"))
    else:
        hr, lr = facelib.list_folder(root / "hr", "hr"), facelib.list_folder(root / "lr", "lr")
        stem = lambda names: [n.rsplit(".", 1)[0] for n in names]  # noqa: E731
        if stem(hr.names) != stem(lr.names):
            raise DatasetError(f"{root}: hr/ and lr/ must hold images of the same names "
                                       f"({len(hr)} and {len(lr)} images)")
    if hr.names != lr.names and (root / "manifest.csv").is_file():
        raise DatasetError(f"{root}: not a paired set: some rows lack hr64 or lr16")
    hr_faces, lr_faces = facelib.load_faces(hr), facelib.load_faces(lr)
    if hr_faces.names != lr_faces.names:
        raise DatasetError(f"{root}: unreadable images broke the HR/LR pairing")
    return TestSet(name, "paired", hr_faces, "all", io.sha256_json([hr.sha256, lr.sha256]), lr=lr_faces)


def _has_identities(fs: facelib.FaceSet) -> bool:
    ids = fs.identity[fs.identity >= 0]
    return bool(ids.numel()) and int(torch.bincount(ids).max()) >= 2


def build_sample(out: Path, device: str = "auto") -> Path:
    """``lrfb build-dataset sample`` into ``out`` (resumes a partial build; instant when done)."""
    if not (out / "manifest.csv").is_file():
        log.info("building the sample dataset -> %s", out)
        build(resolve_config("sample", device=device), default_root(), out)
    return out


def build_degraded_sample(out: Path, seed: int = 0) -> Path:
    """``lrfb build-dataset degraded`` of the sample's held-out HR faces into ``out`` (instant when
    done): the demo's paired test set with a real-world degradation chain instead of DS."""
    if not (out / "manifest.csv").is_file():
        log.info("building the sample's degraded paired set -> %s", out)
        build(resolve_config("degraded", overrides=['source.splits=["test"]', f"source.seed={seed}"]),
              default_root(), out)
    return out


def sample_data(built: Path | None = None, degraded: Path | None = None) -> BenchData:
    """The demo's data, all from the embedded sample (real faces, held-out splits):

    - training: sample HR ``train`` identities; genuine LR: the ``train`` split of ``built``
      (``lrfb build-dataset sample``: tiny faces detected in the sample's photos), else the
      sample's pre-cut genuine-LR ``train`` crops;
    - reference: HR faces of the held-out ``test`` identities;
    - genuine: the test genuine-LR faces (``sample-genuine``; two thirds of one photo's faces);
    - identity: the sample has no identity-labelled genuine LR, so rank-1 runs on DS of the
      held-out HR identities (``sample-ids-ds``; labelled as artificial LR in every row);
    - artificial: the held-out HR faces (``sample-hr``);
    - paired: ``degraded`` (:func:`build_degraded_sample`), the held-out HR faces with LR made by
      the degradation chain (``sample-degraded``), when given.
    """
    hr_test = facelib.list_sample("hr", ("test",))
    reference = _test_set("sample-hr", "reference", hr_test, "test")
    ids = facelib.load_faces(hr_test)
    lr_ids = facelib.FaceSet("lr", to_uint8(downsample(to_unit_float(ids.images))), ids.identity,
                             ids.identities, ids.names, {"made_by": "DS(HR) of sample-hr"})
    genuine = (facelib.list_dataset(built, "lr", ("test",)) if built is not None
               else facelib.list_sample("lr", ("test",)))
    tests = [_test_set("sample-genuine", "genuine", genuine, "test"),
             TestSet("sample-ids-ds", "identity", lr_ids, "test", hr_test.sha256,
                     "artificial LR: DS of held-out HR identities (the sample has no labelled genuine LR)"),
             TestSet("sample-hr", "artificial", reference.faces, "test", reference.sha256)]
    if degraded is not None:
        tests.append(paired_set("sample-degraded", degraded))
    return BenchData(None, built, reference, tests)


def resolve(data: Mapping[str, str], reference: str | None = None, genuine: Mapping[str, str] | None = None,
            paired: Mapping[str, str] | None = None, sample: BenchData | None = None) -> BenchData:
    """Roles from built datasets (``data``: ``NAME=DIR``) and plain folders (``reference``: HR faces
    for FID/KID; ``genuine``: genuine-LR crops of any size; ``paired``: paired sets); roles left
    empty come from ``sample`` (default :func:`sample_data`), logged."""
    genuine, paired = dict(genuine or {}), dict(paired or {})
    base = sample or sample_data()
    if not (data or reference or genuine or paired):
        return base
    train_hr = train_lr = None
    ref_set = None
    tests: list[TestSet] = []
    for name, root in sorted(data.items()):
        root_path = Path(root)
        roles = NAMED_ROLES.get(name, ("genuine",))
        if "train_hr" in roles:
            train_hr = root_path
        if "train_lr" in roles:
            train_lr = root_path
        if "reference" in roles:
            ref_set = _test_set(name, "reference", facelib.list_dataset(root_path, "hr", ("test",)), "test")
        if "artificial" in roles:
            tests.append(_test_set(name, "artificial", facelib.list_dataset(root_path, "hr", ("all",)), "all"))
        if "genuine" in roles:
            genuine.setdefault(name, root)
    for name, root in sorted(genuine.items()):
        listing = _listing(Path(root), "lr", ("test",))
        test = _test_set(name, "genuine", listing, "test" if listing.splits == ("test",) else "all")
        tests.append(test)
        if _has_identities(test.faces):
            tests.append(TestSet(name, "identity", test.faces, test.split, test.sha256))
    tests += [paired_set(name, Path(root)) for name, root in sorted(paired.items())]
    if reference:
        ref_set = _test_set(Path(reference).name, "reference", _listing(Path(reference), "hr", facelib.ALL_SPLITS), "all")
    if ref_set is None:
        log.warning("no --reference or celeba=DIR given: the FID reference is the sample's held-out HR faces")
        ref_set = base.reference
    if train_hr is None or train_lr is None:
        log.warning("training on the embedded sample for %s (give celeba=DIR / widerface=DIR)",
                    ", ".join(r for r, v in (("HR", train_hr), ("genuine LR", train_lr)) if v is None))
    for role in ("genuine", "identity", "artificial", "paired"):
        if not any(t.role == role for t in tests) and base.of_role(role):
            log.warning("no %s test set given: using the sample's", role)
            tests += base.of_role(role)
    return BenchData(train_hr, train_lr, ref_set, tests)
