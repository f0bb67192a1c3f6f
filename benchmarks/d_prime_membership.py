"""Does CR's identity critic D' (Eq. 8) judge realism, or membership of its real faces? (issue 14, cause 5)

In stage 2, D' tells phi_fr features of HR training faces (real) from those of SR faces (fake). Its
real faces are phi_fr's own training identities. This script isolates D' from the rest of CR:

1. the sample's labelled HR training faces are split by identity (every third identity by face
   count) into ``A`` (16 identities) and ``B`` (8);
2. phi_fr (CentreFace, the ``cpu`` preset's stage1_fr) is trained on ``A`` only;
3. D' (the method's 5-layer MLP, the ``cpu`` preset's L2-normalised input, Adam 1e-4, batch 16,
   600 steps: stage 2's length) is trained alone on frozen phi_fr features, real = ``A`` (Eq. 8 as
   written: phi_fr's identities) or real = ``B`` (identities phi_fr never saw), fake = bicubic SR
   of a genuine LR training set (a stand-in for phi_sr(phi_cr(x_g)));
4. D''s scores are compared by AUC (P(score of set 1 > score of set 2), 95 % interval, each set
   resampled on its own) on faces D' never saw: the sample's HR test faces (9 other identities),
   the paired test set's HR faces, and bicubic SR of its LR faces.

    python benchmarks/known_truth.py --pool /tmp/lrfb-dev --out KT ...   # makes KT/genuine, KT/test
    python benchmarks/d_prime_membership.py --kt KT --out OUT [--steps 600] [--augment translation,cutout]

Writes ``OUT/d_prime_membership.csv`` and prints the table.
"""
from __future__ import annotations

import argparse
import collections
import csv
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lrfacebench.data import faces as facelib
from lrfacebench.metrics.bootstrap import auc_interval
from lrfacebench.nn.augment import diff_augment
from lrfacebench.nn.blocks import MLPDiscriminator
from lrfacebench.nn.losses import bce_fake, bce_real
from lrfacebench.pixels import to_unit_float
from lrfacebench.runs import load_method

from known_truth import lrfb

STEPS, BATCH, LR = 600, 16, 1e-4  # the cpu preset's stage 2: joint_iterations, batch_size, lr
PAIRS = (("A", "sample_test"), ("B", "sample_test"), ("sample_test", "sr_test"), ("kt_test", "sr_test"))


def split_identities(out: Path) -> dict[str, Path]:
    """Built-dataset folders ``out/hrA`` and ``out/hrB`` (links to the sample's labelled HR training
    faces): identities sorted by face count, every third one into B."""
    faces = facelib.list_sample("hr", ("train",))
    counts = collections.Counter(x for x in faces.labels if x)
    order = sorted(counts, key=lambda k: (-counts[k], k))
    held = {k for i, k in enumerate(order) if i % 3 == 2}
    folders = {part: out / f"hr{part}" for part in "AB"}
    rows: dict[str, list[dict[str, str]]] = {"A": [], "B": []}
    for path, label in zip(faces.paths, faces.labels):
        if label:
            part = "B" if label in held else "A"
            link = folders[part] / "hr64" / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(path.resolve())
            rows[part].append({"face_id": path.name, "identity": label, "split": "train", "lr16": "",
                               "hr64": f"hr64/{path.name}"})
    for part, folder in folders.items():
        with open(folder / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[part][0]))
            writer.writeheader()
            writer.writerows(rows[part])
    return folders


def features(phi_fr: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """L2-normalised phi_fr features ``(N,512)`` of faces ``(N,3,64,64)`` in [0,1]."""
    with torch.no_grad():
        return torch.cat([F.normalize(phi_fr.embed(c * 2 - 1), dim=1) for c in x.split(128)])


def train_critic(real: torch.Tensor, fake: torch.Tensor, seed: int, steps: int = STEPS,
                 view: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> MLPDiscriminator:
    """D' trained alone: bce(D'(view(real)), 1) + bce(D'(view(fake)), 0), batches drawn with
    replacement; ``view`` maps a batch of ``real``/``fake`` rows to D''s ``(B,512)`` input."""
    torch.manual_seed(seed)
    critic = MLPDiscriminator((512, 512, 256, 128, 64, 1))
    opt = torch.optim.Adam(critic.parameters(), lr=LR)
    draw = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        r = real[torch.randint(len(real), (BATCH,), generator=draw)]
        f = fake[torch.randint(len(fake), (BATCH,), generator=draw)]
        loss = bce_real(critic(view(r))) + bce_fake(critic(view(f)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return critic


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kt", type=Path, required=True, help="output of known_truth.py (its genuine/ and test/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=STEPS, help="D' training steps (the cpu preset's stage 2: 600)")
    ap.add_argument("--augment", default="", metavar="T1,T2",
                    help="DiffAugment policy applied to D''s training faces before phi_fr (CR's d_prime_augment); "
                         "scores are always of the faces as they are")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    folders = split_identities(args.out)
    rec = args.out / "recognizer_A"
    if not (rec / "final.pt").is_file():
        lrfb("train", "cr", "--preset", "cpu", "-o", "sr_iterations=0", "-o", "use_cr=false", "-o",
             "joint_finetune=false", "--hr", str(folders["A"]), "--seed", "1001", "--out", str(rec))
    method = load_method(rec, nets="all")
    phi_fr = method.nets["phi_fr"].eval()
    centres = F.normalize(method.nets["centre_loss"].centres.detach(), dim=1)
    load = lambda fl: to_unit_float(facelib.load_faces(fl).images)  # noqa: E731
    bicubic = lambda x: F.interpolate(x, size=64, mode="bicubic", align_corners=False).clamp(0, 1)  # noqa: E731
    every = facelib.ALL_SPLITS
    faces = {"A": load(facelib.list_dataset(folders["A"], "hr")), "B": load(facelib.list_dataset(folders["B"], "hr")),
             "sample_test": load(facelib.list_sample("hr", ("test",))),
             "kt_test": load(facelib.list_dataset(args.kt / "test", "hr", every)),
             "sr_train": bicubic(load(facelib.list_dataset(args.kt / "genuine", "lr", every))),
             "sr_test": bicubic(load(facelib.list_dataset(args.kt / "test", "lr", every)))}
    feats = {k: features(phi_fr, v) for k, v in faces.items()}
    policy = tuple(t for t in args.augment.split(",") if t)
    train_on = faces if policy else feats
    view = (lambda x: features(phi_fr, (diff_augment(x * 2 - 1, policy) + 1) / 2)) if policy else (lambda x: x)
    print("cosine to the nearest CentreFace centre:",
          {k: round(float((v @ centres.T).max(1).values.mean()), 3) for k, v in feats.items()})
    scores: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for real in ("A", "B"):
        for seed in seeds:
            critic = train_critic(train_on[real], train_on["sr_train"], seed, args.steps, view)
            with torch.no_grad():
                scores[real, seed] = {k: torch.sigmoid(critic(v)).flatten().numpy() for k, v in feats.items()}
    rows = []
    for real in ("A", "B"):
        per_seed = [(str(s), scores[real, s]) for s in seeds]
        pooled = ("pooled", {k: np.mean([scores[real, s][k] for s in seeds], axis=0) for k in feats})
        for seed, p in [*per_seed, pooled]:
            for a, b in PAIRS:
                auc, low, high = auc_interval(p[a], p[b])
                rows.append({"real": real, "seed": seed, "pair": f"{a} > {b}", "auc": auc, "low": low, "high": high})
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "d_prime_membership.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    sys.exit(main())
