"""Filters on real faces: the sample's genuine-LR crops, its scenes and real detections."""
from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lrfacebench.data.annotated import load_dlib_annotated, shrink_to_face_size
from lrfacebench.data.detect import Detection, DetectorConfig, make_detector
from lrfacebench.data.filters import (REASONS, Candidate, FilterConfig, crop_face, crop_rect, face_probability,
                                      filter_candidates, make_candidates, near_duplicates)
from lrfacebench.data.review import contact_sheet
from lrfacebench.io import list_images, read_rgb

NO_DEDUPE = FilterConfig(dedupe=False)


@pytest.fixture(scope="module")
def provenance_faces(sample_dir):
    """(scene image, box, stored crop) of every genuine-LR crop whose scene ships in the sample."""
    scenes: dict[str, np.ndarray] = {}
    out = []
    with open(sample_dir / "provenance.csv", newline="") as f:
        for row in csv.DictReader(f):
            box = re.search(r"face box \(([-\d.]+),([-\d.]+),([-\d.]+),([-\d.]+)\)", row["notes"])
            scene = re.search(r"scene file in scenes/: (\S+)", row["notes"])
            if row["kind"] != "genuine_lr" or not box or not scene:
                continue
            path = sample_dir / "scenes" / scene.group(1)
            if path.is_file():
                if scene.group(1) not in scenes:
                    scenes[scene.group(1)] = read_rgb(path)
                stored = read_rgb(sample_dir / row["path"])
                out.append((scenes[scene.group(1)], tuple(map(float, box.groups())), stored))
    assert len(out) > 200
    return out


@pytest.fixture(scope="module")
def genuine_crops(sample_dir):
    return [read_rgb(p) for p in list_images(sample_dir / "genuine_lr")]


@pytest.fixture(scope="module")
def detected(sample_dir):
    """Real MTCNN detections (with landmarks) on a dlib photo shrunk so its 7 faces are about 12 px."""
    names, photos, boxes = load_dlib_annotated(sample_dir / "scenes" / "dlib_faces")
    k = names.index("2008_004176.jpg")
    img, gt = shrink_to_face_size(photos[k], boxes[k], 12)
    dets = make_detector(DetectorConfig(device="cpu")).detect(img)
    cands = make_candidates(img, dets, "2008_004176.jpg")
    assert len(cands) >= 6
    return img, gt, cands


def as_candidate(crop: np.ndarray, score: float = 0.99, landmarks=None) -> Candidate:
    """A crop as if detected in the middle of a large image (so no border or size surprises)."""
    h, w = crop.shape[:2]
    return Candidate("x.jpg", None, Detection((100.0, 100.0, 100.0 + w, 100.0 + h), score, landmarks),
                     (1000, 1000), crop)


def test_crop_face_reproduces_the_sample_crops(provenance_faces):
    """The native crop rule of shared/data/README.md: square, side = max box side, no resampling."""
    exact = 0
    for scene, box, stored in provenance_faces:
        crop = crop_face(scene, box)
        x0, y0, x1, y1 = crop_rect(box)
        assert crop.shape[0] == crop.shape[1] == x1 - x0 == y1 - y0
        assert abs(crop.shape[0] - stored.shape[0]) <= 1  # boxes in provenance are rounded to 0.1 px
        np.testing.assert_array_equal(crop, scene[y0:y1, x0:x1])
        exact += crop.shape == stored.shape and bool((crop == stored).all())
    assert exact >= 0.9 * len(provenance_faces)


def test_crop_face_clips_at_the_border(provenance_faces):
    scene = provenance_faces[0][0]
    crop = crop_face(scene, (-5.0, 10.0, 7.0, 22.0))  # 12 px square, 5 px outside on the left
    assert crop.shape == (12, 7, 3)
    np.testing.assert_array_equal(crop, scene[10:22, 0:7])
    with pytest.raises(ValueError, match="outside"):
        crop_face(scene, (-40.0, -40.0, -20.0, -20.0))


def test_real_genuine_lr_faces_are_kept(genuine_crops):
    kept_faces = [c for c in genuine_crops if max(c.shape[:2]) <= 16]
    reasons = filter_candidates([as_candidate(c) for c in kept_faces], FilterConfig())
    counts = Counter(r or "kept" for r in reasons)
    assert counts["kept"] >= 0.95 * len(kept_faces), counts
    assert not any(r and r.startswith("junk") for r in reasons), counts
    assert counts["near_duplicate"] <= 2, counts  # different people of one crowd are not duplicates


def test_real_detections_are_kept(detected):
    img, gt, cands = detected
    reasons = filter_candidates(cands, FilterConfig(max_avg_size=20))
    kept = [c.detection.box for c, r in zip(cands, reasons) if r is None]
    assert len(kept) >= 6 and all(r is None or r in REASONS for r in reasons)


def test_crop_side_filter_rejects_exactly_the_shrunk_crops(sample_dir):
    """max_crop_side: among real detections (a dlib photo shrunk to faces of about 15 px) within
    the size window, exactly those whose square crop is larger than 16 px (their LR face would be
    shrunk by DS's operator) are rejected, and only with the option set."""
    names, photos, boxes = load_dlib_annotated(sample_dir / "scenes" / "dlib_faces")
    k = names.index("2008_004176.jpg")
    img, _ = shrink_to_face_size(photos[k], boxes[k], 15)  # crops on both sides of 16 px
    cands = make_candidates(img, make_detector(DetectorConfig(device="cpu")).detect(img))
    cfg = FilterConfig(max_avg_size=20, dedupe=False, face_check=False)
    side = np.array([crop_rect(c.detection.box)[2] - crop_rect(c.detection.box)[0] for c in cands])
    base = np.array(filter_candidates(cands, cfg), dtype=object)
    strict = np.array(filter_candidates(cands, FilterConfig(max_avg_size=20, dedupe=False, face_check=False,
                                                            max_crop_side=16)), dtype=object)
    in_window = np.array([6 <= c.detection.avg_size <= 20 for c in cands])
    assert "crop_too_large" not in set(base)
    assert (in_window & (side > 16)).sum() >= 1 and (in_window & (side <= 16)).sum() >= 1
    np.testing.assert_array_equal(strict == "crop_too_large", in_window & (side > 16))
    np.testing.assert_array_equal(strict[strict != "crop_too_large"], base[strict != "crop_too_large"])


def test_each_filter_rejects_what_it_should(detected, sample_dir):
    img, gt, cands = detected
    c = max(cands, key=lambda c: c.detection.score)
    d = c.detection
    x1, y1, x2, y2 = d.box

    def variant(**kw) -> Candidate:
        det = Detection(kw.pop("box", d.box), kw.pop("score", d.score), kw.pop("landmarks", d.landmarks))
        return Candidate(c.source, c.frame, det, kw.pop("image_size", c.image_size), kw.pop("crop", c.crop))

    names, photos, boxes = load_dlib_annotated(sample_dir / "scenes" / "dlib_faces")
    k = names.index("2008_004176.jpg")
    native = make_candidates(photos[k], [Detection(tuple(boxes[k][0]), 0.99, None)])[0]  # a real 37 px face
    crop = c.crop.astype(np.float64)
    mean = crop.mean(axis=(0, 1))
    luma = crop @ [0.299, 0.587, 0.114]
    low_contrast = mean + (crop - mean) * (8.0 / (np.percentile(luma, 95) - np.percentile(luma, 5)))
    flipped = d.landmarks.copy()
    flipped[:, 1] = y1 + y2 - flipped[:, 1]  # mouth above the eyes
    # the face cut by the left image border: same pixels, image starting 4 px into the box
    cut_img = img[:, int(x1) + 4:]
    cut_box = (x1 - int(x1) - 4, y1, x2 - int(x1) - 4, y2)
    cases = {
        "too_large": native,
        "too_small": variant(box=(x1, y1, x1 + 4, y1 + 4)),
        "cut_by_border": variant(box=cut_box, image_size=(cut_img.shape[1], cut_img.shape[0]),
                                 crop=crop_face(cut_img, cut_box)),
        "low_score": variant(score=0.5),
        "bad_landmarks": variant(landmarks=flipped),
        "junk_blank": variant(crop=np.broadcast_to(mean.round().astype(np.uint8), c.crop.shape).copy()),
        "junk_dark": variant(crop=(crop * 0.08).round().astype(np.uint8)),
        "junk_flat": variant(crop=np.clip(low_contrast, 0, 255).round().astype(np.uint8)),
    }
    got = filter_candidates(list(cases.values()) + [c], NO_DEDUPE)
    assert got == list(cases) + [None]
    assert set(cases) | {"not_a_face", "near_duplicate", "crop_too_large"} == set(REASONS)
    # first failing filter wins: too large and low score -> too_large
    assert filter_candidates([variant(box=(x1, y1, x1 + 30, y1 + 30), score=0.1)], NO_DEDUPE) == ["too_large"]
    # ground-truth boxes (no score, no landmarks) skip those two checks
    assert filter_candidates([variant(score=math.nan, landmarks=None)], NO_DEDUPE) == [None]


def test_face_check_rejects_real_background(sample_dir):
    """10-16 px patches of real photos away from every annotated face are not faces."""
    names, photos, boxes = load_dlib_annotated(sample_dir / "scenes" / "dlib_faces")
    rng = np.random.default_rng(0)
    patches = []
    for img, b in zip(photos, boxes):
        grown = np.concatenate([b[:, :2] - (b[:, 2:] - b[:, :2]) / 2, b[:, 2:] + (b[:, 2:] - b[:, :2]) / 2], 1)
        start = len(patches)
        while len(patches) < start + 12:
            s = int(rng.integers(10, 17))
            x, y = int(rng.integers(0, img.shape[1] - s)), int(rng.integers(0, img.shape[0] - s))
            if ((x + s < grown[:, 0]) | (x > grown[:, 2]) | (y + s < grown[:, 1]) | (y > grown[:, 3])).all():
                patches.append(img[y:y + s, x:x + s])
    reasons = filter_candidates([as_candidate(p, 0.9) for p in patches], NO_DEDUPE)
    assert len(patches) == 108 and None not in reasons, Counter(reasons)
    assert Counter(reasons)["not_a_face"] >= 0.6 * len(patches)  # the rest is blank/dark/flat junk


def test_face_probability_separates_faces_from_background(genuine_crops, provenance_faces):
    faces = face_probability(genuine_crops)
    assert faces.shape == (len(genuine_crops),) and ((faces >= 0) & (faces <= 1)).all()
    assert np.median(faces) > 0.95 and (faces >= FilterConfig().face_check_threshold).mean() > 0.97
    scene = provenance_faces[0][0]  # parade scene: the sky/buildings in its top rows hold no faces
    background = [scene[y:y + 14, x:x + 14] for y in (2, 20, 40) for x in range(0, 1000, 100)]
    assert np.median(face_probability(background)) < 0.2


def test_near_duplicates_finds_copies_not_other_faces(provenance_faces):
    scene, box, _ = provenance_faces[5]
    x1, y1, x2, y2 = box
    base = [crop_face(s, b) for s, b, _ in provenance_faces[:40]]
    buf = io.BytesIO()
    Image.fromarray(base[5]).save(buf, format="JPEG", quality=70)
    reencoded = np.asarray(Image.open(buf).convert("RGB"))
    shifted = crop_face(scene, (x1 + 1, y1 + 1, x2 + 1, y2 + 1))  # box jitter of the next video frame
    crops = base + [reencoded, shifted]
    dup = near_duplicates(crops, FilterConfig())
    assert dup[:40] == [None] * 40
    assert dup[40] == 5 and dup[41] in (5, 40)
    assert near_duplicates(crops, FilterConfig()) == dup  # deterministic
    assert near_duplicates([], FilterConfig()) == [] and near_duplicates(base[:1], FilterConfig()) == [None]
    reasons = filter_candidates([as_candidate(c) for c in crops], FilterConfig(max_avg_size=30))
    assert reasons[40] == reasons[41] == "near_duplicate" and reasons[5] is None


def test_contact_sheet(genuine_crops, tmp_path):
    crops = genuine_crops[:20]
    contact_sheet(crops, [f"s00000-{i:06d}" for i in range(20)], tmp_path / "kept.jpg", cell=32, cols=8)
    with Image.open(tmp_path / "kept.jpg") as im:
        assert im.format == "JPEG" and im.size == (8 * 34, 3 * (32 + 14))
        sheet = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert sheet[:32, :32].std() > 10  # a face, not an empty cell
    contact_sheet([], [], tmp_path / "none.png")
    assert (tmp_path / "none.png").stat().st_size > 0
    with pytest.raises(ValueError, match="labels"):
        contact_sheet(crops, ["a"], tmp_path / "x.png")
