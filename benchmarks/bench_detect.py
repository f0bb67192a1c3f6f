"""Tiny-face detection: accuracy on shrunk annotated photos, what the face check removes, throughput.

Prints, for the default ``DetectorConfig()`` and a naive MTCNN (native scale, facenet-pytorch
defaults):
  * recall / precision / mean IoU (match: IoU >= 0.4, greedy one-to-one) on the sample's dlib
    photos (9 PASCAL VOC photos, 43 annotated faces of 37-109 px) shrunk so that faces average
    12 px and 9 px; ``raw`` = detector output, ``filtered`` = after the default quality filters
    (score, landmarks, border, junk, face check; not the size window or dedupe);
  * the face check: share of the sample's genuine-LR crops it keeps, of real background patches
    it rejects, and how many detector false/true positives of the shrunk photos it removes;
  * throughput of the default detector on the sample's scenes at native size (photos/s, faces/s).

With ``--review DIR`` it writes contact sheets of the unmatched (false-positive) detections,
each next to a 3x context crop, so they can be checked by eye (annotations may miss faces).

    python benchmarks/bench_detect.py                   # this CPU
    python benchmarks/bench_detect.py --device cuda --review /tmp/review
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import torch

from lrfacebench.data.annotated import evaluate_on_annotated, load_dlib_annotated, match_greedy, shrink_to_face_size
from lrfacebench.data.detect import DetectorConfig, box_iou, make_detector
from lrfacebench.data.filters import FilterConfig, crop_face, face_probability, make_candidates, quality_filter
from lrfacebench.data.review import contact_sheet
from lrfacebench.io import list_images, read_rgb

SAMPLE = Path(__file__).resolve().parent.parent / "lrfacebench" / "sample"
NAIVE = dict(scales=(1.0,), min_face_size=20, thresholds=(0.6, 0.7, 0.7))


def accuracy(device: str, review: Path | None) -> None:
    names, photos, boxes = load_dlib_annotated(SAMPLE / "scenes" / "dlib_faces")
    keep = quality_filter(FilterConfig())
    print(f"accuracy on {len(photos)} annotated photos, {sum(map(len, boxes))} faces, shrunk; IoU >= 0.4")
    print(f"{'detector':8s} {'face px':>7s} | {'raw R':>6s} {'raw P':>6s} {'IoU':>5s} {'dets':>4s} | "
          f"{'filt R':>6s} {'filt P':>6s} {'IoU':>5s} {'dets':>4s} | {'s':>5s}")
    for label, cfg in (("default", DetectorConfig(device=device)), ("naive", DetectorConfig(device=device, **NAIVE))):
        det = make_detector(cfg)
        for target in (12, 9):
            r = evaluate_on_annotated(det, photos, boxes, target, verify=keep)
            raw = r["raw"]
            print(f"{label:8s} {target:7d} | {raw['recall']:6.3f} {raw['precision']:6.3f} {raw['mean_iou']:5.3f} "
                  f"{raw['n_det']:4d} | {r['recall']:6.3f} {r['precision']:6.3f} {r['mean_iou']:5.3f} {r['n_det']:4d} "
                  f"| {r['seconds']:5.1f}")
            if review is not None and label == "default":
                write_review(r["unmatched"], names, photos, target, review / f"unmatched_{target}px.png")
    print(f"default: {dataclasses.asdict(DetectorConfig())}")
    print(f"filters: {dataclasses.asdict(FilterConfig())}")


def write_review(unmatched, names, photos, target, path: Path) -> None:
    """Unmatched detection crops, each followed by 3x context from the full-resolution photo."""
    crops, labels = [], []
    for k, d, small in unmatched:
        s = photos[k].shape[1] / small.shape[1]
        x1, y1, x2, y2 = (v * s for v in d.box)
        w, h = x2 - x1, y2 - y1
        crops += [crop_face(small, d.box), crop_face(photos[k], (x1 - w, y1 - h, x2 + w, y2 + h))]
        labels += [f"{d.score:.2f}", names[k][:8]]
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(crops, labels, path, cell=96, cols=8)
    print(f"  {len(unmatched)} unmatched detections at {target} px -> {path}")


def face_check(device: str) -> None:
    thr = FilterConfig().face_check_threshold
    genuine = [read_rgb(p) for p in list_images(SAMPLE / "genuine_lr")]
    p = face_probability(genuine)
    print(f"face check (threshold {thr}): keeps {np.mean(p >= thr):.3f} of {len(genuine)} genuine-LR sample crops")
    names, photos, boxes = load_dlib_annotated(SAMPLE / "scenes" / "dlib_faces")
    rng = np.random.default_rng(0)
    patches = []
    for img, b in zip(photos, boxes):
        for _ in range(200):
            s = int(rng.integers(10, 17))
            x, y = int(rng.integers(0, img.shape[1] - s)), int(rng.integers(0, img.shape[0] - s))
            grown = np.concatenate([b[:, :2] - (b[:, 2:] - b[:, :2]) / 2, b[:, 2:] + (b[:, 2:] - b[:, :2]) / 2], 1)
            if box_iou(np.array([[x, y, x + s, y + s]]), grown).max() == 0:  # away from every face
                patches.append(img[y:y + s, x:x + s])
    p = face_probability(patches)
    print(f"  rejects {np.mean(p < thr):.3f} of {len(patches)} background patches (10-16 px) of the dlib photos")
    det = make_detector(DetectorConfig(device=device))
    tp = fp = tp_out = fp_out = 0
    for target in (8, 10, 12, 14, 16):
        for img, b in zip(photos, boxes):
            small, gt = shrink_to_face_size(img, b, target)
            dets = det.detect(small)
            if not dets:
                continue
            good = {i for i, _, _ in match_greedy(np.array([d.box for d in dets]), gt, 0.4)}
            probs = face_probability([c.crop for c in make_candidates(small, dets)])
            for i, q in enumerate(probs):
                if i in good:
                    tp, tp_out = tp + 1, tp_out + (q < thr)
                else:
                    fp, fp_out = fp + 1, fp_out + (q < thr)
    print(f"  on detections in the dlib photos shrunk to 8-16 px: removes {fp_out}/{fp} false positives "
          f"and {tp_out}/{tp} true faces")


def reference_faces() -> dict[str, np.ndarray]:
    """Boxes of the sample's genuine-LR crops per scene (relative path under scenes/), from
    provenance.csv: an earlier MTCNN run at x1/x2/x3, p >= 0.95, checked by eye."""
    out: dict[str, list[tuple[float, ...]]] = {}
    with open(SAMPLE / "provenance.csv", newline="") as f:
        for row in csv.DictReader(f):
            box = re.search(r"face box \(([-\d.]+),([-\d.]+),([-\d.]+),([-\d.]+)\)", row["notes"])
            scene = re.search(r"scene file in scenes/: (\S+)", row["notes"])
            if row["kind"] == "genuine_lr" and box and scene:
                out.setdefault(scene.group(1), []).append(tuple(map(float, box.groups())))
    return {k: np.array(v) for k, v in out.items()}


def throughput(device: str, extra: Path | None) -> None:
    """Detection speed on the sample's scenes at native size, and how many of the reference
    genuine-LR faces in them the default detector finds again."""
    files = list_images(SAMPLE / "scenes") + (list_images(extra) if extra else [])
    images = [read_rgb(f) for f in files]
    det = make_detector(DetectorConfig(device=device))
    det.detect(images[0][:64, :64].copy())  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    found = [det.detect(im) for im in images]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu
    n = sum(map(len, found))
    mpx = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    print(f"throughput ({device}, {torch.get_num_threads()} threads): {len(images)} photos ({mpx:.1f} Mpx) "
          f"in {dt:.1f} s = {len(images) / dt:.3f} photos/s, {n / dt:.2f} detections/s ({n} detections); "
          f"process CPU time {cpu:.1f} s (wall time inflates when other jobs share the cores)")
    refs = reference_faces()
    hit = tot = 0
    for f, dets in zip(files, found):
        rel = f.relative_to(SAMPLE / "scenes").as_posix() if f.is_relative_to(SAMPLE / "scenes") else ""
        if rel in refs:
            tot += len(refs[rel])
            hit += len(match_greedy(np.array([d.box for d in dets]).reshape(-1, 4), refs[rel], 0.4))
    print(f"  finds {hit}/{tot} = {hit / max(tot, 1):.3f} of the reference genuine-LR faces (8-24 px) of those scenes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--review", type=Path, help="write contact sheets of unmatched detections here")
    ap.add_argument("--scenes", type=Path, help="extra photos for the throughput run")
    ap.add_argument("--skip", nargs="*", default=[], choices=("accuracy", "face-check", "throughput"))
    args = ap.parse_args()
    if "accuracy" not in args.skip:
        accuracy(args.device, args.review)
    if "face-check" not in args.skip:
        face_check(args.device)
    if "throughput" not in args.skip:
        throughput(args.device, args.scenes)


if __name__ == "__main__":
    main()
