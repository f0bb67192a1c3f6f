"""Rebuild the embedded sample ``lrfacebench/sample/`` from ``../shared/data``.

Only files whose source repository licence allows redistribution (MIT, Boost 1.0,
Apache-2.0) are taken. HR faces are re-framed by the genuine-LR crop rule (a square of the
MTCNN box side, centred on the box) and resized to 128x128 (Lanczos, JPEG q92); genuine-LR
crops and scene photos are copied byte for byte. Run from the repository root::

    python scripts/make_sample.py --shared ../shared/data

``--all-licences`` builds the same way from every file, whatever its licence, into another
folder: a larger development set for local training runs, never to be shipped. It also writes a
``manifest.csv`` into its ``hr/`` and ``genuine_lr/`` so that they can be passed to
``lrfb train --hr/--lr``::

    python scripts/make_sample.py --shared ../shared/data --all-licences --out /tmp/lrfb-dev
    lrfb train cr --preset cpu --hr /tmp/lrfb-dev/hr --lr /tmp/lrfb-dev/genuine_lr
"""
from __future__ import annotations

import argparse
import csv
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from lrfacebench.data.detect import Detection, DetectorConfig, make_detector
from lrfacebench.data.manifest import REQUIRED_COLUMNS

REDISTRIBUTABLE = ("MIT", "Boost", "Apache")
HR_SIZE = 128
# Scenes with many genuine tiny faces, plus dlib's annotated PASCAL VOC photos.
SCENES = (
    "ultralight_groups/ultralight_25.jpg",
    "ultralight_groups/ultralight_26.jpg",
    "wider_samples/dsfd_0_Parade_Parade_0_873.jpg",
    "wider_samples/dsfd_11_Meeting_Meeting_11_Meeting_Meeting_11_26.jpg",
)
DLIB_XML = ("training.xml", "testing.xml")
# The genuine-LR test split: two thirds of this photo's crops (the rest train). The training
# photos are few and each has its own light and colour, so a test photo seen by no training
# face would measure transfer to one unseen camera, not the paper's protocol (train and test
# faces from one collection, e.g. WIDER FACE train/val). Test faces themselves are never trained on.
GENUINE_TEST_SCENE = "misc_groups/retinaface_img3.jpg"
# HR re-framing: the best MTCNN face of each HR crop at native scale. A face below this score, or
# whose square is under this fraction of the image side (a false detection on a tight chip, or a
# face cut by the border), or none at all, drops the image: its framing cannot be matched.
HR_MIN_SCORE = 0.9
HR_MIN_BOX_FRACTION = 0.4
# ../shared's restoration inputs are real degraded faces, "not clean HR" (its README). With
# --all-licences (CodeFormer's greyscale and heavily degraded ones) they are left out; the
# shipped sample keeps its three GFPGAN ones, chosen by licence before this rule existed.
NOT_CLEAN_HR = "restoration_inputs/"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "lrfacebench" / "sample"
# A short real clip for the video source and its tracks test (MIT): every `every`-th of the first
# `every * frames` frames of the 1920x1080 25 fps original, the region `crop` (x0, y0, x1, y1) cut
# and shrunk by `scale` (area averaging), re-encoded as MPEG-4 Part 2 at 25 / every fps (so times
# stay those of the original). People walk towards the camera; the faces in the crop are about
# 25-120 px in the original, 6-30 px after a further source.scale=0.5.
VIDEO = {"path": "facenet-pytorch_video.mp4", "dest": "video/arcade.mp4", "crop": (560, 440, 1360, 920),
         "every": 2, "frames": 16, "scale": 0.5}


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "provenance.csv", newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=SAMPLE_DIR)
    ap.add_argument("--all-licences", action="store_true",
                    help="take every file whatever its licence (a local development set; not for --out "
                         "lrfacebench/sample) and write manifest.csv files for lrfb train --hr/--lr")
    args = ap.parse_args()
    src, out, dev = args.shared, args.out, args.all_licences
    if dev and out.resolve() == SAMPLE_DIR:
        ap.error("--all-licences takes files that may not be redistributed: give another --out")

    def ok(r: dict[str, str]) -> bool:
        return dev or r["license"].startswith(REDISTRIBUTABLE)

    for sub in ("hr", "genuine_lr", "scenes", "video"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    records: list[dict[str, str]] = []

    detector = make_detector(DetectorConfig(scales=(1.0,), min_face_size=20.0, device="cpu"))
    dropped = []
    for r in _rows(src / "hr_faces"):
        if not ok(r) or (dev and r["path"].startswith(NOT_CLEAN_HR)):
            continue
        name = r["path"].replace("/", "__").rsplit(".", 1)[0] + ".jpg"
        with Image.open(src / "hr_faces" / r["path"]) as im:
            im = im.convert("RGB")
        faces = detector.detect(np.asarray(im))
        rect = _hr_crop_rect(faces[0], im.width, im.height) if faces else None
        if rect is None:
            dropped.append(r["path"])
            continue
        im.crop(rect).resize((HR_SIZE, HR_SIZE), Image.Resampling.LANCZOS).save(out / "hr" / name, quality=92)
        records.append(dict(path=f"hr/{name}", kind="hr", split="", **_src(r),
                            notes=f"{r['notes']}; re-framed to the square {rect} (x0,y0,x1,y1) around the "
                                  f"MTCNN box (p={faces[0].score:.3f}), resized to {HR_SIZE}x{HR_SIZE} "
                                  "(Lanczos), JPEG q92"))
    print(f"HR: dropped {len(dropped)} images without a usable face box: {', '.join(dropped)}")

    for r in _rows(src / "genuine_lr"):
        if not ok(r):
            continue
        scene = re.search(r"scene file in scenes/: (\S+)", r["notes"]).group(1)
        name = Path(r["path"]).name
        shutil.copyfile(src / "genuine_lr" / r["path"], out / "genuine_lr" / name)
        records.append(dict(path=f"genuine_lr/{name}", kind="genuine_lr",
                            split="test" if scene == GENUINE_TEST_SCENE else "train",
                            **_src(r), notes=r["notes"]))
    _split_genuine_test_scene(records)

    scene_rows = {r["path"]: r for r in _rows(src / "scenes")}
    dlib = sorted({m for x in DLIB_XML for m in re.findall(r"file='([^']+)'",
                                                           (src / "scenes/dlib_faces" / x).read_text())})
    for rel in list(SCENES) + [f"dlib_faces/{f}" for f in dlib] + [f"dlib_faces/{x}" for x in DLIB_XML]:
        r = scene_rows[rel]
        assert ok(r), rel
        dest = out / "scenes" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "scenes" / rel, dest)
        records.append(dict(path=f"scenes/{rel}", kind="scene", split="", **_src(r), notes=r["notes"]))

    video = {r["path"]: r for r in _rows(src / "videos")}[VIDEO["path"]]
    assert ok(video), VIDEO["path"]
    records.append(dict(path=VIDEO["dest"], kind="video", split="", **_src(video),
                        notes=_trim_video(src / "videos" / VIDEO["path"], out / VIDEO["dest"])))

    _split_hr_by_identity(records)
    records.sort(key=lambda d: d["path"])
    fields = ["path", "kind", "split", "identity", "license", "source_repo", "source_path", "notes"]
    with open(out / "provenance.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(records)
    if dev:
        _write_manifests(out, records)
    print(f"wrote {len(records)} files to {out}")


def _hr_crop_rect(face: Detection, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The genuine-LR crop rule (``filters.crop_rect``: a square of the larger box side, centred
    on the box) for an HR image, shrunk about the box centre until it fits inside the image (tight
    face chips, whose box overhangs them, are not padded). ``None`` for a face that fails
    :data:`HR_MIN_SCORE`, or whose square is then under :data:`HR_MIN_BOX_FRACTION` of the image."""
    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = min(max(x2 - x1, y2 - y1), 2 * cx, 2 * (width - cx), 2 * cy, 2 * (height - cy))
    if face.score < HR_MIN_SCORE or side < HR_MIN_BOX_FRACTION * max(width, height):
        return None
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    s = round(side)
    return x0, y0, min(width, x0 + s), min(height, y0 + s)


def _split_genuine_test_scene(records: list[dict[str, str]]) -> None:
    """Every third crop of :data:`GENUINE_TEST_SCENE` (sorted by path) moves to ``train``."""
    crops = sorted((r for r in records if r["kind"] == "genuine_lr" and r["split"] == "test"),
                   key=lambda r: r["path"])
    for r in crops[::3]:
        r["split"] = "train"


def _split_hr_by_identity(records: list[dict[str, str]]) -> None:
    """Every third identity with >= 2 HR images (sorted by label) is held out as ``test``
    (rank-1 and FID reference in the demo benchmark); the rest, singletons included, is ``train``."""
    hr = [r for r in records if r["kind"] == "hr"]
    counts: dict[str, int] = {}
    for r in hr:
        counts[r["identity"]] = counts.get(r["identity"], 0) + 1
    multi = sorted(k for k, n in counts.items() if k and n >= 2)
    test = set(multi[2::3])
    for r in hr:
        r["split"] = "test" if r["identity"] in test else "train"


def _write_manifests(out: Path, records: list[dict[str, str]]) -> None:
    """``hr/manifest.csv`` and ``genuine_lr/manifest.csv`` in the columns ``lrfb train`` reads
    (``data.manifest.REQUIRED_COLUMNS``); images are referenced by their name in that folder."""
    for kind, column in (("hr", "hr64"), ("genuine_lr", "lr16")):
        with open(out / kind / "manifest.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=REQUIRED_COLUMNS)
            w.writeheader()
            for r in records:
                if r["kind"] == kind:
                    name = r["path"].split("/", 1)[1]
                    w.writerow({"face_id": name, "identity": r["identity"], "split": r["split"] or "train",
                                "lr16": "", "hr64": "", column: name})


def _trim_video(src: Path, dest: Path) -> str:
    """Write the trimmed clip of :data:`VIDEO` from ``src`` to ``dest``; returns its provenance note."""
    import cv2

    x0, y0, x1, y1 = VIDEO["crop"]
    every, n, scale = VIDEO["every"], VIDEO["frames"], VIDEO["scale"]
    size = (round((x1 - x0) * scale), round((y1 - y0) * scale))
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps / every, size)
    for i in range(every * n):
        ok, frame = cap.read()
        assert ok, f"{src}: frame {i} cannot be decoded"
        if i % every == 0:
            writer.write(cv2.resize(frame[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    return (f"frames 0, {every}, ..., {every * (n - 1)} of the {fps:g} fps 1920x1080 original (4.2 s): region "
            f"({x0},{y0},{x1},{y1}) cut, shrunk x{scale:g} to {size[0]}x{size[1]} (OpenCV INTER_AREA), re-encoded "
            f"as MPEG-4 Part 2 (OpenCV mp4v) at {fps / every:g} fps, {n} frames ({n * every / fps:g} s); a covered "
            "arcade in London, pedestrians walking towards an eye-level camera, faces about 25-120 px in the "
            "original (12-60 px here). Used by tests/test_tracks.py")


def _src(r: dict[str, str]) -> dict[str, str]:
    return dict(identity=r.get("identity", ""), license=r["license"],
                source_repo=r["source_repo"], source_path=r["source_path"])


if __name__ == "__main__":
    main()
