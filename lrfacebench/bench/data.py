"""Which faces the benchmark trains on and evaluates: roles resolved from ``--data NAME=DIR``.

Roles:
  train_hr    paired HR faces for training (CelebA ``train`` split)
  train_lr    genuine LR faces for training (WIDER FACE ``train`` split)
  reference   HR faces FID is measured against (CelebA ``test`` split); A-LR = DS(reference)
  genuine     genuine-LR test sets (LR-PIPA, LR-DukeMTMC, any set the user names)
  identity    genuine-LR test sets with identities (rank-1; LR-PIPA)
  artificial  paired HR test sets super-resolved from DS(HR) (Helen)

Without data arguments everything comes from the embedded sample (see :func:`sample_data`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from lrfacebench.data import faces as facelib
from lrfacebench.degrade import downsample, to_uint8

log = logging.getLogger(__name__)

# Dataset names with a fixed role; any other name is a genuine-LR test set.
NAMED_ROLES = {"celeba": ("train_hr", "reference"), "widerface": ("train_lr",), "helen": ("artificial",)}


@dataclass
class TestSet:
    """One evaluation set.

    faces: LR sets (genuine/identity) hold ``(N,3,16,16)`` uint8; artificial sets ``(N,3,64,64)`` HR.
    note:  how the set was made when it is not what the role name suggests (shown in the protocol).
    """

    name: str
    role: str
    faces: facelib.FaceSet
    split: str
    sha256: str
    note: str = ""


@dataclass
class BenchData:
    train_hr: Path | None  # None = the embedded sample
    train_lr: Path | None
    reference: TestSet
    tests: list[TestSet] = field(default_factory=list)

    def of_role(self, role: str) -> list[TestSet]:
        return [t for t in self.tests if t.role == role]


def _set(name: str, role: str, faces: facelib.FaceList, split: str, note: str = "") -> TestSet:
    return TestSet(name, role, facelib.load_faces(faces), split, faces.sha256, note)


def _has_identities(fs: facelib.FaceSet) -> bool:
    ids = fs.identity[fs.identity >= 0]
    return bool(ids.numel()) and int(torch.bincount(ids).max()) >= 2


def build_sample(out: Path, device: str = "auto") -> Path:
    """``lrfb build-dataset sample`` into ``out`` (resumes a partial build; instant when done)."""
    from lrfacebench.data.build import build, resolve_config
    from lrfacebench.data.sources.sample import default_root

    if not (out / "manifest.csv").is_file():
        log.info("building the sample dataset -> %s", out)
        build(resolve_config("sample", device=device), default_root(), out)
    return out


def sample_data(built: Path | None = None) -> BenchData:
    """The demo's data, all from the embedded sample (real faces, held-out splits):

    - training: sample HR ``train`` identities; genuine LR: the ``train`` split of ``built``
      (``lrfb build-dataset sample``: tiny faces detected in the sample's photos), else the
      sample's pre-cut genuine-LR ``train`` crops;
    - reference: HR faces of the held-out ``test`` identities;
    - genuine: the test genuine-LR faces (``sample-genuine``; two thirds of one photo's faces);
    - identity: the sample has no identity-labelled genuine LR, so rank-1 runs on DS of the
      held-out HR identities (``sample-ids-ds``; labelled as artificial LR in every row);
    - artificial: the held-out HR faces (``sample-hr``).
    """
    hr_test = facelib.list_sample("hr", ("test",))
    reference = _set("sample-hr", "reference", hr_test, "test")
    ids = facelib.load_faces(hr_test)
    lr_ids = facelib.FaceSet("lr", to_uint8(downsample(ids.images.float() / 255)), ids.identity,
                             ids.identities, ids.names, {"made_by": "DS(HR) of sample-hr"})
    genuine = (facelib.list_dataset(built, "lr", ("test",)) if built is not None
               else facelib.list_sample("lr", ("test",)))
    return BenchData(None, built, reference, [
        _set("sample-genuine", "genuine", genuine, "test"),
        TestSet("sample-ids-ds", "identity", lr_ids, "test", hr_test.sha256,
                "artificial LR: DS of held-out HR identities (the sample has no labelled genuine LR)"),
        TestSet("sample-hr", "artificial", reference.faces, "test", reference.sha256),
    ])


def resolve(data: Mapping[str, str]) -> BenchData:
    """Roles from ``NAME=DIR`` pairs (built datasets); missing roles come from the sample, logged."""
    if not data:
        return sample_data()
    base = sample_data()
    train_hr = train_lr = None
    reference = None
    tests: list[TestSet] = []
    for name, root in sorted(data.items()):
        root_path = Path(root)
        roles = NAMED_ROLES.get(name, ("genuine",))
        if "train_hr" in roles:
            train_hr = root_path
        if "train_lr" in roles:
            train_lr = root_path
        if "reference" in roles:
            reference = _set(name, "reference", facelib.list_dataset(root_path, "hr", ("test",)), "test")
        if "artificial" in roles:
            tests.append(_set(name, "artificial", facelib.list_dataset(root_path, "hr", ("all",)), "all"))
        if "genuine" in roles:
            listing = facelib.list_dataset(root_path, "lr", ("test",))
            test = _set(name, "genuine", listing, "test")
            tests.append(test)
            if _has_identities(test.faces):
                tests.append(TestSet(name, "identity", test.faces, "test", test.sha256))
    if reference is None:
        log.warning("no celeba=DIR given: the FID reference is the sample's held-out HR faces")
        reference = base.reference
    if train_hr is None or train_lr is None:
        log.warning("training on the embedded sample for %s (give celeba=DIR / widerface=DIR)",
                    ", ".join(r for r, v in (("HR", train_hr), ("genuine LR", train_lr)) if v is None))
    for role in ("genuine", "identity", "artificial"):
        if not any(t.role == role for t in tests):
            log.warning("no %s test set given: using the sample's", role)
            tests += base.of_role(role)
    return BenchData(train_hr, train_lr, reference, tests)
