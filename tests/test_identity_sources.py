"""The pre-cropped identity sources ``tinyface`` and ``survface`` on small trees in their official
layouts, made from the embedded sample's real faces: HR crops of labelled people shrunk to about
20x16 px (TinyFace's average size) as identity faces, native genuine-LR crops as distractors.

Each build checks identities, splits, the protocol's row order, ``pairs.csv`` and that a bad
protocol row, a listed but missing image, an unlisted image and a corrupt image are each counted
and reported in ``unreadable.csv``, never silently dropped.
"""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.io import savemat

from lrfacebench.cli import main
from lrfacebench.data.manifest import COLUMNS, PAIR_COLUMNS
from lrfacebench.data.sources import get_source
from lrfacebench.data.sources.base import LayoutError
from lrfacebench.io import read_rgb

FACE_SIZE = (16, 20)  # width, height: TinyFace's faces average about 20x16 px


@pytest.fixture(scope="module")
def people(sample_dir: Path) -> list[list[np.ndarray]]:
    """Five labelled people of the sample, three faces each, shrunk to FACE_SIZE (RGB uint8)."""
    with open(sample_dir / "provenance.csv", newline="") as f:
        hr = [r for r in csv.DictReader(f) if r["kind"] == "hr" and r["identity"]]
    by_person: dict[str, list[str]] = defaultdict(list)
    for r in hr:
        by_person[r["identity"]].append(r["path"])
    chosen = sorted(p for p, paths in by_person.items() if len(paths) >= 3)[:5]
    assert len(chosen) == 5
    return [[np.asarray(Image.fromarray(read_rgb(sample_dir / p)).resize(FACE_SIZE, Image.BICUBIC))
             for p in by_person[person][:3]] for person in chosen]


@pytest.fixture(scope="module")
def strangers(sample_dir: Path) -> list[np.ndarray]:
    """Three native genuine-LR crops of the sample (unlabelled people)."""
    paths = sorted((sample_dir / "genuine_lr").glob("*.png"))[:3]
    return [read_rgb(p) for p in paths]


def save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def write_list(path: Path, names_key: str, ids_key: str, rows: list[tuple[str, float]]) -> None:
    """A protocol list as the releases store it: a cell array of file names and an N x 1 id column."""
    names = np.empty((len(rows), 1), dtype=object)
    names[:, 0] = [n for n, _ in rows]
    savemat(path, {names_key: names, ids_key: np.array([[i] for _, i in rows], dtype=np.float64)})


def build(source: str, root: Path, out: Path, *args: str) -> dict[str, list[dict[str, str]]]:
    res = CliRunner().invoke(main, ["build-dataset", source, "--root", str(root), "--out", str(out), *args],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert table(out / "manifest.csv", COLUMNS) is not None
    return {name: table(out / f"{name}.csv") for name in ("manifest", "unreadable", "rejected")}


def table(path: Path, columns: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    """The rows of a CSV file (its header must be ``columns`` when given)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert columns is None or tuple(reader.fieldnames or ()) == columns
        return list(reader)


def reasons(unreadable: list[dict[str, str]]) -> dict[tuple[str, str], str]:
    return {(r["file"], r["line"]): r["reason"] for r in unreadable}


# ---- TinyFace ------------------------------------------------------------------------------
def make_tinyface(parent: Path, people: list[list[np.ndarray]], strangers: list[np.ndarray]) -> Path:
    """``parent/tinyface/``: people 0-1 in Training_Set (ids 11, 12), people 2-4 in the test set
    (persons 21-23, protocol ids 1-3), three distractors, plus one bad row, one listed but missing
    image, one unlisted image and one corrupt training image."""
    base = parent / "tinyface"
    for k, person in enumerate(people[:2]):
        for n, face in enumerate(person, 1):
            save(base / f"Training_Set/{11 + k}/{11 + k}_{n}.jpg", face)
    (base / "Training_Set/12/12_9.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # corrupt image
    test = base / "Testing_Set"
    gallery, probe = [], []
    for k, person in enumerate(people[2:]):
        save(test / f"Gallery_Match/{21 + k}_1.jpg", person[0])
        gallery.append((f"{21 + k}_1.jpg", k + 1))
        for n, face in enumerate(person[1:], 2):
            save(test / f"Probe/{21 + k}_{n}.jpg", face)
            probe.append((f"{21 + k}_{n}.jpg", k + 1))
    probe.reverse()  # the protocol's row order, not the file order, decides the order of the faces
    probe.insert(2, ("22_7.jpg", 2))  # listed, but the image is missing
    probe.insert(4, ("23_8.jpg", float("nan")))  # bad row: the id is no integer
    save(test / "Probe/21_5.jpg", people[2][0])  # in the folder but in no list
    write_list(test / "gallery_match_img_ID_pairs.mat", "gallery_set", "gallery_ids", gallery)
    write_list(test / "probe_img_ID_pairs.mat", "probe_set", "probe_ids", probe)
    for n, face in enumerate(strangers, 1):
        save(test / f"Gallery_Distractor/{n}_{n}.jpg", face)  # a person-like name, yet no identity
    return base


def test_tinyface_build_keeps_identities_splits_and_protocol_order(tmp_path, people, strangers):
    make_tinyface(tmp_path / "data", people, strangers)
    t = build("tinyface", tmp_path / "data", tmp_path / "out")  # the folder holding tinyface/
    m = t["manifest"]
    assert Counter(r["split"] for r in m) == {"train": 6, "gallery": 3, "probe": 6, "distractor": 3}
    ids = {r["source"]: r["identity"] for r in m}
    assert ids["Training_Set/11/11_2.jpg"] == "tinyface:11"
    assert ids["Testing_Set/Gallery_Match/22_1.jpg"] == ids["Testing_Set/Probe/22_3.jpg"] == "tinyface:22"
    assert all(r["identity"] == "" for r in m if r["split"] == "distractor")
    probes = [r["source"].rsplit("/", 1)[1] for r in m if r["split"] == "probe"]
    assert probes == ["23_3.jpg", "23_2.jpg", "22_3.jpg", "22_2.jpg", "21_3.jpg", "21_2.jpg"]
    for r in m:  # the whole image is the face
        assert read_rgb(tmp_path / "out" / r["lr16"]).shape == (16, 16, 3)
        if r["split"] != "distractor":
            assert (float(r["x1"]), float(r["y1"]), float(r["width"]), float(r["height"])) == (0, 0, *FACE_SIZE)
    bad = reasons(t["unreadable"])
    where = "Testing_Set/probe_img_ID_pairs.mat"
    assert "22_7.jpg: image Testing_Set/Probe/22_7.jpg not found" in bad[(where, "row 3")]
    assert "id nan is not an integer" in bad[(where, "row 5")]
    assert "not listed in" in bad[("Testing_Set/Probe/21_5.jpg", "")]
    assert "Training_Set/12/12_9.jpg" in {f for f, _ in bad}
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert stats["counts"]["items_unreadable"] == 1 and stats["counts"]["annotation_problems"] == 3
    assert stats["counts"]["identities"] == 5 and stats["root"] == str(tmp_path / "data/tinyface")
    assert not (tmp_path / "out/pairs.csv").exists()


def test_tinyface_protocol_ids_must_name_persons_one_to_one(tmp_path, people, strangers):
    base = make_tinyface(tmp_path, people, strangers)
    test = base / "Testing_Set"
    write_list(test / "probe_img_ID_pairs.mat", "probe_set", "probe_ids",
               [("21_2.jpg", 1), ("21_3.jpg", 2), ("22_2.jpg", 1)])
    scan = get_source("tinyface").scan(base, get_source("tinyface").Options(splits=("gallery", "probe")))
    assert [it.source for it in scan.items if it.split == "probe"] == ["Testing_Set/Probe/21_2.jpg"]
    why = {p.line: p.reason for p in scan.problems if p.file.endswith("probe_img_ID_pairs.mat")}
    assert "id 2 names person 22" in why["row 2"] and "id 1 names person 21" in why["row 3"]


def test_tinyface_layout_errors_are_clear(tmp_path, people, strangers):
    reader = get_source("tinyface")
    with pytest.raises(LayoutError, match="Training_Set or Testing_Set"):
        reader.scan(tmp_path, reader.Options())
    base = make_tinyface(tmp_path, people, strangers)
    (base / "Testing_Set/probe_img_ID_pairs.mat").unlink()
    with pytest.raises(LayoutError, match="probe_img_ID_pairs.mat not found"):
        reader.scan(base, reader.Options())
    (base / "Testing_Set/gallery_match_img_ID_pairs.mat").write_bytes(b"MATLAB 5.0 truncated")
    with pytest.raises(LayoutError, match="cannot read the Matlab file"):
        reader.scan(base, reader.Options(splits=("gallery",)))
    assert {it.split for it in reader.scan(base, reader.Options(splits=("train",))).items} == {"train"}
    with pytest.raises(ValueError, match="splits must be among"):
        reader.scan(base, reader.Options(splits=("test",)))


# ---- QMUL-SurvFace ----------------------------------------------------------------------------
def make_survface(parent: Path, people: list[list[np.ndarray]], strangers: list[np.ndarray]) -> Path:
    """``parent/QMUL-SurvFace/``: people 0-1 in training_set (persons 101, 102), people 2-3 in the
    identification gallery and mated probes (persons 201, 202; protocol ids 1, 2), person 4 and two
    distractors as unmated probes, and the verification images of persons 201, 202 with two
    positive, one negative and one bad pair."""
    base = parent / "QMUL-SurvFace"
    for k, person in enumerate(people[:2]):
        for n, face in enumerate(person, 1):
            save(base / f"training_set/{101 + k}/{101 + k}_cam1_{n}.jpg", face)
    test = base / "Face_Identification_Test_Set"
    gallery, mated = [], []
    for k, person in enumerate(people[2:4]):
        save(test / f"gallery/{201 + k}_cam2_1.jpg", person[0])
        gallery.append((f"{201 + k}_cam2_1.jpg", k + 1))
        for n, face in enumerate(person[1:], 2):
            save(test / f"mated_probe/{201 + k}_cam3_{n}.jpg", face)
            mated.append((f"{201 + k}_cam3_{n}.jpg", k + 1))
    mated.append(("", 2))  # bad row: no file name
    write_list(test / "gallery_img_ID_pairs.mat", "gallery_set", "gallery_ids", gallery)
    write_list(test / "mated_probe_img_ID_pairs.mat", "mated_probe_set", "mated_probe_ids", mated)
    save(test / "unmated_probe/203_cam1_1.jpg", people[4][0])
    for n, face in enumerate(strangers[:2], 1):
        save(test / f"unmated_probe/distractors_{n}.jpg", face)
    verify = base / "Face_Verification_Test_Set"
    for k, person in enumerate(people[2:4]):
        for n, face in enumerate(person[:2], 1):
            save(verify / f"verification_images/{201 + k}_cam4_{n}.jpg", face)
    (verify / "verification_images/202_cam4_2.jpg").write_bytes(b"")  # zero-byte image
    pairs = {"positive_pairs_names": [("201_cam4_1.jpg", "201_cam4_2.jpg"), ("202_cam4_1.jpg", "202_cam4_2.jpg")],
             "negative_pairs_names": [("201_cam4_1.jpg", "202_cam4_1.jpg"), ("201_cam4_1.jpg", "209_cam4_1.jpg")]}
    for key, rows in pairs.items():
        cells = np.empty((len(rows), 2), dtype=object)
        cells[:] = rows
        savemat(verify / f"{key}.mat", {key: cells})
    return base


def test_survface_build_keeps_identities_splits_and_pairs(tmp_path, people, strangers):
    base = make_survface(tmp_path, people, strangers)
    t = build("survface", base, tmp_path / "out")  # the release folder itself
    m = t["manifest"]
    assert Counter(r["split"] for r in m) == {"train": 6, "gallery": 2, "probe": 4, "unmated_probe": 3,
                                              "verification": 3}
    ids = {r["source"]: r["identity"] for r in m}
    assert ids["training_set/102/102_cam1_3.jpg"] == "survface:102"
    assert ids["Face_Identification_Test_Set/gallery/201_cam2_1.jpg"] == "survface:201"
    assert ids["Face_Identification_Test_Set/mated_probe/202_cam3_3.jpg"] == "survface:202"
    assert ids["Face_Identification_Test_Set/unmated_probe/203_cam1_1.jpg"] == "survface:203"
    assert ids["Face_Identification_Test_Set/unmated_probe/distractors_1.jpg"] == ""
    bad = reasons(t["unreadable"])
    assert "no file name" in bad[("Face_Identification_Test_Set/mated_probe_img_ID_pairs.mat", "row 5")]
    assert "209_cam4_1.jpg not in" in bad[("Face_Verification_Test_Set/negative_pairs_names.mat", "row 2")]
    assert "Face_Verification_Test_Set/verification_images/202_cam4_2.jpg" in {f for f, _ in bad}
    pairs = table(tmp_path / "out/pairs.csv")
    assert tuple(pairs[0]) == PAIR_COLUMNS and [p["same"] for p in pairs] == ["1", "1", "0"]
    face = {r["face_id"]: r for r in m}
    assert [face[pairs[0][k]]["source"].rsplit("/", 1)[1] for k in ("face_a", "face_b")] == \
        ["201_cam4_1.jpg", "201_cam4_2.jpg"]
    assert face[pairs[0]["face_a"]]["split"] == "verification"
    assert pairs[1]["face_b"] == "" and pairs[1]["source_b"].endswith("202_cam4_2.jpg")  # its face is unreadable
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert stats["pairs"] == {"pairs": 3, "same": 2, "with_both_faces": 2}
    assert "verification pairs (`pairs.csv`)" in (tmp_path / "out/DATASET_CARD.md").read_text()


def test_survface_size_and_junk_filters_apply(tmp_path, people, strangers):
    base = make_survface(tmp_path, people, strangers)
    save(base / "training_set/101/101_cam1_7.png", np.full((12, 12, 3), 128, np.uint8))  # blank
    save(base / "training_set/101/101_cam1_8.png", people[0][0][4:16])  # 16x12 px: kept
    t = build("survface", base, tmp_path / "out", "-o", 'source.splits=["train"]', "-o", "filters.max_avg_size=16")
    assert [r["source"] for r in t["manifest"]] == ["training_set/101/101_cam1_8.png"]
    assert Counter(r["reason"] for r in t["rejected"]) == {"too_large": 6, "junk_blank": 1}
