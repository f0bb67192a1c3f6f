"""``lrfb build-dataset degraded``: paired sets whose LR is the seeded degradation chain of the HR,
built from a plain folder of real sample faces (with bad files among them), from the embedded
sample and from a built paired set; parameters recorded and reproducible, reruns byte-identical."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrfacebench.cli import main
from lrfacebench.data import degradations
from lrfacebench.data.build import build
from lrfacebench.data.faces import list_dataset
from lrfacebench.data.manifest import COLUMNS as MANIFEST_COLUMNS
from lrfacebench.data.recipe import resolve_config
from lrfacebench.data.sources.sample import default_root
from lrfacebench.degrade import downsample, imresize, to_uint8
from lrfacebench.io import read_rgb

EXTRA = ("passes", "source_size", "jpeg_quality", "degradation")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The chain works on 8-64 px images: one thread avoids thread-pool overhead on shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cli(*argv: str, ok: bool = True):
    res = CliRunner().invoke(main, list(argv), catch_exceptions=False)
    assert (res.exit_code == 0) == ok, res.output
    return res


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS + EXTRA
        return list(reader)


def digest(out: Path) -> dict[str, str]:
    """sha256 of the manifest and every PNG, keyed by relative path."""
    files = [out / "manifest.csv"] + sorted(p for d in ("crops", "lr16", "hr64") for p in (out / d).iterdir())
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


def u8(x: torch.Tensor) -> np.ndarray:
    return to_uint8(x)[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def hr_tree(tmp_path_factory, sample_dir) -> Path:
    """8 real HR faces in a plain tree (split folder, identity folders, loose files) plus a
    zero-byte and a truncated JPEG."""
    root = tmp_path_factory.mktemp("hr_tree")
    src = sorted((sample_dir / "hr").glob("*.jpg"))[::20][:8]
    places = ["test/alice/a1.jpg", "test/alice/a2.jpg", "train/bob/b1.jpg", "carol/c1.jpg", "carol/c2.jpg",
              "x/y/z.jpg", "loose1.jpg", "test/loose2.jpg"]
    for p, dest in zip(src, places):
        (root / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / dest)
    (root / "empty.jpg").write_bytes(b"")
    data = src[-1].read_bytes()
    (root / "carol" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def tree_build(tmp_path_factory, hr_tree) -> Path:
    out = tmp_path_factory.mktemp("deg") / "out"
    res = cli("build-dataset", "degraded", "--root", str(hr_tree), "--out", str(out), "--seed", "7")
    assert "kept        8 faces" in res.output
    return out


def test_plain_folder_build_splits_identities_and_bad_files(tree_build, hr_tree):
    rs = rows(tree_build)
    got = {r["source"]: (r["split"], r["identity"]) for r in rs}
    assert got == {"test/alice/a1.jpg": ("test", "alice"), "test/alice/a2.jpg": ("test", "alice"),
                   "train/bob/b1.jpg": ("train", "bob"), "carol/c1.jpg": ("test", "carol"),
                   "carol/c2.jpg": ("test", "carol"), "x/y/z.jpg": ("test", "x/y"), "loose1.jpg": ("test", ""),
                   "test/loose2.jpg": ("test", "")}
    with open(tree_build / "unreadable.csv", newline="") as f:
        bad = {r["file"]: r["reason"] for r in csv.DictReader(f)}
    assert bad.keys() == {"empty.jpg", "carol/truncated.jpg"}
    assert "zero-byte" in bad["empty.jpg"]
    stats = json.loads((tree_build / "stats.json").read_text())
    assert stats["counts"]["items_unreadable"] == 2 and stats["counts"]["kept"] == 8
    for r in rs:  # HR = the whole image resized to 64x64 by the project's rule
        np.testing.assert_array_equal(read_rgb(tree_build / r["hr64"]),
                                      u8(imresize(t(read_rgb(hr_tree / r["source"])), (64, 64))))
    hr, lr = list_dataset(tree_build, "hr", ("test",)), list_dataset(tree_build, "lr", ("test",))
    assert len(hr) == 7 and hr.names == lr.names
    assert [p.name for p in hr.paths] == [p.name for p in lr.paths]
    card = (tree_build / "DATASET_CARD.md").read_text()
    assert "`degradation`" in card and "lrfacebench.data.degradations" in card


def test_lr_is_the_recorded_chain_not_ds(tree_build):
    rs = rows(tree_build)
    mad = []
    for r in rs:
        hr, lr = read_rgb(tree_build / r["hr64"]), read_rgb(tree_build / r["lr16"])
        assert lr.shape == (16, 16, 3)
        mad.append(np.abs(lr.astype(int) - u8(downsample(t(hr)))).mean())
        params = json.loads(r["degradation"])  # the parameters parse back and reproduce the LR exactly
        np.testing.assert_array_equal(degradations.apply(hr, params), lr)
        last = params["passes"][-1]
        assert int(r["passes"]) == len(params["passes"]) in (1, 2)
        assert int(r["source_size"]) == last["resize"]["size"] and 8 <= int(r["source_size"]) <= 24
        assert r["jpeg_quality"] == str(last["jpeg"]["quality"]) and 30 <= int(r["jpeg_quality"]) <= 95
    assert min(mad) > 1.5 and np.mean(mad) > 5, mad  # PNG-stored: DS(HR) would differ by 0
    assert len({r["degradation"] for r in rs}) == len(rs)
    assert len({json.dumps(json.loads(r["degradation"])["passes"][0]["resize"]) for r in rs}) > 2


def test_same_seed_is_byte_identical_other_seed_differs(tmp_path, tree_build, hr_tree):
    same, other = tmp_path / "same", tmp_path / "other"
    cli("build-dataset", "degraded", "--root", str(hr_tree), "--out", str(same), "-o", "source.seed=7")
    cli("build-dataset", "degraded", "--root", str(hr_tree), "--out", str(other), "--seed", "8")
    assert digest(same) == digest(tree_build)
    a, b = digest(tree_build), digest(other)
    assert a["manifest.csv"] != b["manifest.csv"]
    assert all(a[k] == b[k] for k in a if k.startswith("hr64/"))
    assert sum(a[k] != b[k] for k in a if k.startswith("lr16/")) == 8


def test_library_build_from_the_sample_test_split_then_from_that_built_set(tmp_path, sample_dir):
    out = tmp_path / "sample-degraded"
    cfg = resolve_config("degraded", overrides=['source.splits=["test"]'], limit=6)
    result = build(cfg, default_root(), out)
    assert result is not None and len(result.manifest) == 6
    with open(sample_dir / "provenance.csv", newline="") as f:
        prov = {r["path"]: r for r in csv.DictReader(f) if r["kind"] == "hr"}
    rs = rows(out)
    assert all(prov[r["source"]]["split"] == "test" == r["split"] for r in rs)
    assert [r["identity"] for r in rs] == [prov[r["source"]]["identity"] for r in rs]
    # a built paired set as --root: its hr64 faces are kept as they are; a missing one is reported
    (out / rs[0]["hr64"]).unlink()
    again = tmp_path / "again"
    cli("build-dataset", "degraded", "--root", str(out), "--out", str(again))
    rs2 = rows(again)
    assert [r["source"] for r in rs2] == [r["hr64"] for r in rs[1:]]
    assert [r["identity"] for r in rs2] == [r["identity"] for r in rs[1:]]
    for r in rs2:
        np.testing.assert_array_equal(read_rgb(again / r["hr64"]), read_rgb(out / r["source"]))
    with open(again / "unreadable.csv", newline="") as f:
        (bad,) = list(csv.DictReader(f))
    assert bad["file"] == "manifest.csv" and bad["line"] == "2" and rs[0]["hr64"] in bad["reason"]


def test_sample_covers_the_chain_and_bad_ranges_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    ps = [degradations.sample(rng, degradations.Chain()) for _ in range(300)]
    passes = [p for x in ps for p in x["passes"]]
    assert {len(x["passes"]) for x in ps} == {1, 2}
    assert {p["blur"]["kind"] for p in passes if "blur" in p} == set(degradations.BLUR_KINDS)
    assert {p["noise"]["kind"] for p in passes} == {"gaussian", "poisson"}
    assert {p["order"][0] for p in passes} == {"blur", "resize", "noise"} and all(p["order"][-1] == "jpeg"
                                                                                  for p in passes)
    assert any("blur" not in p for p in passes[1:])  # the second pass blurs with probability 0.8
    with pytest.raises(ValueError, match="jpeg_quality"):
        resolve_config("degraded", overrides=["source.chain.first.jpeg_quality=[0, 101]"])
    with pytest.raises(ValueError, match="second_prob"):
        resolve_config("degraded", overrides=["source.chain.second_prob=2"])
    res = cli("build-dataset", "celeba", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--seed", "1",
              ok=False)
    assert "has no seed" in res.output


def test_scenes_variant_pairs_detected_lr_with_hr_from_the_original_photo(tmp_path, sample_dir):
    from lrfacebench.data.detect import box_iou
    from lrfacebench.data.filters import crop_rect
    from lrfacebench.data.sources.base import read_dlib_xml

    name = "2008_002079.jpg"
    (tmp_path / "photos").mkdir()
    shutil.copy(sample_dir / "scenes" / "dlib_faces" / name, tmp_path / "photos" / name)
    out = tmp_path / "out"
    cli("build-dataset", "degraded_scenes", "--root", str(tmp_path / "photos"), "--out", str(out),
        "--device", "cpu", "-o", "detector.scales=[2.0]")
    with open(out / "manifest.csv", newline="") as f:
        rs = list(csv.DictReader(f))
    assert rs, "no pair kept"
    photo = read_rgb(tmp_path / "photos" / name)
    gt = read_dlib_xml(sample_dir / "scenes" / "dlib_faces" / "training.xml")[name]
    for r in rs:
        assert float(r["shrink"]) < 0.5 and float(r["hr_size"]) >= 32
        assert 6 <= (float(r["width"]) + float(r["height"])) / 2 <= 16  # found small in the shrunk photo
        crop = read_rgb(out / r["crop"])
        assert max(crop.shape[:2]) <= 17
        np.testing.assert_array_equal(read_rgb(out / r["lr16"]), u8(imresize(t(crop), (16, 16))))
        hr_box = np.array([[float(r[k]) for k in ("hr_x1", "hr_y1", "hr_x2", "hr_y2")]])
        assert box_iou(hr_box, gt).max() > 0.3  # the HR box is an annotated face of the original
        x0, y0, x1, y1 = crop_rect(tuple(hr_box[0]))
        assert x0 >= 0 and y0 >= 0 and x1 <= photo.shape[1] and y1 <= photo.shape[0]
        np.testing.assert_array_equal(read_rgb(out / r["hr64"]), u8(imresize(t(photo[y0:y1, x0:x1]), (64, 64))))
    hr, lr = list_dataset(out, "hr", ("test",)), list_dataset(out, "lr", ("test",))
    assert hr.names == lr.names == [r["face_id"] for r in rs]
