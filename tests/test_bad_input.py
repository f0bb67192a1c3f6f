"""Bad input never stops a build and is always reported: a corpus of broken and unusual image
files, a truncated video, malformed annotations, boxes outside the image and missing files."""
from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lrfacebench.cli import main
from lrfacebench.data.annotated import shrink_to_face_size
from lrfacebench.data.sources.base import read_dlib_xml
from lrfacebench.io import read_rgb

FAST = ["-o", "detector.scales=[2.0]", "--device", "cpu"]


def build(source: str, root: Path, out: Path, *args: str) -> dict[str, list[dict[str, str]]]:
    res = CliRunner().invoke(main, ["build-dataset", source, "--root", str(root), "--out", str(out), *args],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tables = {}
    for name in ("manifest", "rejected", "unreadable"):
        with open(out / f"{name}.csv", newline="") as f:
            tables[name] = list(csv.DictReader(f))
    return tables


def bomb_png(path: Path, side: int = 40_000) -> None:
    """A valid PNG header claiming side x side pixels (a decompression bomb) with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def face_photo(sample_dir) -> np.ndarray:
    """A real group photo shrunk so that its faces average 13 px (RGB uint8)."""
    d = sample_dir / "scenes" / "dlib_faces"
    boxes = read_dlib_xml(d / "training.xml")["2007_007763.jpg"]
    return shrink_to_face_size(read_rgb(d / "2007_007763.jpg"), boxes, 13.0)[0]


def test_image_corpus(tmp_path, face_photo):
    root = tmp_path / "corpus"
    root.mkdir()
    im = Image.fromarray(face_photo)
    im.save(root / "good.png")
    im.convert("L").save(root / "gray.png")
    im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(root / "palette.png")
    im.convert("CMYK").save(root / "cmyk.jpg", quality=95)
    Image.fromarray(face_photo.mean(2).astype(np.uint16) * 257).save(root / "sixteen.png")  # 16-bit grey
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored pixels are the photo rotated CCW
    Image.fromarray(np.rot90(face_photo).copy()).save(root / "rotated.png", exif=exif.tobytes())
    (root / "zero.jpg").write_bytes(b"")
    (root / "truncated.png").write_bytes((root / "good.png").read_bytes()[:2000])
    (root / "corrupt.jpg").write_bytes(np.random.RandomState(0).bytes(5000))
    (root / "notes.jpg").write_text("not an image")
    bomb_png(root / "bomb.png")
    t = build("folder", root, tmp_path / "out", *FAST)
    bad = {r["file"]: r["reason"] for r in t["unreadable"]}
    assert set(bad) == {"zero.jpg", "truncated.png", "corrupt.jpg", "notes.jpg", "bomb.png"}
    assert bad["zero.jpg"] == "zero-byte file"
    assert "decompression bomb" in bad["bomb.png"] or "too large" in bad["bomb.png"]
    assert all(bad.values())
    candidates: dict[str, set[tuple[str, ...]]] = {}
    for r in t["manifest"] + t["rejected"]:
        candidates.setdefault(r["source"], set()).add(tuple(r[k] for k in ("x1", "y1", "x2", "y2")))
    readable = {"good.png", "gray.png", "palette.png", "cmyk.jpg", "sixteen.png", "rotated.png"}
    assert set(candidates) == readable and len(t["manifest"]) >= 5
    # EXIF orientation is applied: the rotated file gives the upright photo's faces, box for box
    # (and they are dropped as near-duplicates of the upright copy: a repeated photo)
    assert candidates["rotated.png"] == candidates["good.png"]
    dup = {r["source"] for r in t["rejected"] if r["reason"] == "near_duplicate"}
    assert "rotated.png" in dup and "good.png" in {r["source"] for r in t["manifest"]}
    gray = [r for r in t["manifest"] if r["source"] in ("gray.png", "sixteen.png")]
    assert gray and read_rgb(tmp_path / "out" / gray[0]["crop"]).shape[2] == 3


def test_truncated_and_unopenable_video(tmp_path, face_photo):
    import cv2

    root = tmp_path / "videos"
    root.mkdir()
    h, w = face_photo.shape[:2]
    vw = cv2.VideoWriter(str(root / "cam.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert vw.isOpened()
    for k in range(12):
        vw.write(np.ascontiguousarray(np.roll(face_photo, 3 * k, axis=1)[..., ::-1]))
    vw.release()
    data = (root / "cam.avi").read_bytes()
    (root / "cam.avi").write_bytes(data[: int(len(data) * 0.6)])  # the header still says 12 frames
    (root / "broken.mp4").write_bytes(b"\0" * 4096)
    t = build("video", root, tmp_path / "out", *FAST, "-o", "source.stride=2")
    rows = {(r["file"], r["line"]): r["reason"] for r in t["unreadable"]}
    assert "OpenCV cannot open" in rows[("broken.mp4", "")]
    lost = sorted(int(line.split()[1]) for f, line in rows if f == "cam.avi")
    assert lost and lost == list(range(lost[0], 12, 2))  # every sampled frame after the cut
    read = {int(r["frame"]) for r in t["manifest"]} | {int(r["frame"]) for r in t["rejected"]}
    assert read and max(read) < lost[0]


def test_bad_annotations_boxes_outside_and_missing_files(tmp_path, face_photo):
    root = tmp_path / "wider"
    img_dir = root / "WIDER_val" / "images" / "9--Press"
    img_dir.mkdir(parents=True)
    Image.fromarray(face_photo).save(img_dir / "a.jpg", quality=95)
    h, w = face_photo.shape[:2]
    lines = ["9--Press/a.jpg", "4",
             "5000 5000 12 12 0 0 0 0 0 0",            # outside the image
             f"{w - 6} 20 12 12 0 0 0 0 0 0",          # cut by the right border
             "40 30 12 -3 0 0 0 0 0 0",                # negative height
             "not numbers at all",
             "9--Press/missing.jpg", "1", "1 1 5 5 0 0 0 0 0 0",
             "trailing garbage"]
    (root / "wider_face_split").mkdir()
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    t = build("widerface", root, tmp_path / "out", "-o", 'source.splits=["val"]')
    reasons = [r["reason"] for r in t["unreadable"]]
    assert any("outside the" in r for r in reasons)
    assert any("empty box" in r for r in reasons)
    assert any("not numbers" in r for r in reasons)
    assert any("missing image" in r for r in reasons)
    assert any("expected an image path" in r for r in reasons)
    assert [r["reason"] for r in t["rejected"]] == ["cut_by_border"]
    assert t["manifest"] == []
