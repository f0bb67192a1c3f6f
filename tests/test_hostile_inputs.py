"""A hostile-input corpus, generated on the fly from the sample's real faces (no committed binaries).

Every case goes through the command(s) that read it and must end as a counted skip or a clear
error: exit status 0 (with the skip reported), 1 or 2 with a message, never a traceback; nothing is
written outside ``--out`` and a refused command changes nothing already written.
"""
from __future__ import annotations

import csv
import io as stdio
import json
import os
import pickle
import shutil
import struct
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from test_bad_input import bomb_png

from lrfacebench.cli import main
from lrfacebench.data.annotated import shrink_to_face_size
from lrfacebench.data.faces import list_dataset
from lrfacebench.data.sources.base import read_dlib_xml
from lrfacebench.errors import DatasetError
from lrfacebench.io import read_rgb, save_checkpoint
from lrfacebench.methods import get_method
from lrfacebench.runs import export_final

FAST = ("-o", "detector.scales=[2.0]", "--device", "cpu")
READ = ""  # expected outcome of an image case: decoded (no unreadable row)


@pytest.fixture(scope="module")
def photo(sample_dir) -> Image.Image:
    """A real group photo (PASCAL VOC 2007_007763) shrunk so that its faces average 13 px (166x125)."""
    d = sample_dir / "scenes" / "dlib_faces"
    boxes = read_dlib_xml(d / "training.xml")["2007_007763.jpg"]
    return Image.fromarray(shrink_to_face_size(read_rgb(d / "2007_007763.jpg"), boxes, 13.0)[0])


@pytest.fixture()
def area(tmp_path, monkeypatch) -> Path:
    """A working folder; the current directory is inside it, so stray relative writes are seen."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    """Every regular file below ``root`` (outside ``skip``) with its bytes; links are not followed."""
    out = {}
    for dirpath, _, files in os.walk(root):
        if any(Path(dirpath) == s or s in Path(dirpath).parents for s in skip):
            continue
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out[str(p)] = p.read_bytes()
    return out


def invoke(args: list[str], area: Path, out: Path | None, codes: tuple[int, ...]) -> Result:
    """Run ``lrfb ARGS``; assert a clean ending (exit status in ``codes``, no traceback) and that
    nothing changed outside ``out`` (and, for a refusal, nowhere at all)."""
    before = snapshot(area, (out,) if out is not None else ())
    kept = snapshot(out) if out is not None and out.exists() else {}
    res = CliRunner().invoke(main, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output, res.output
    assert res.exit_code in codes, res.output
    if res.exit_code:
        assert res.output.strip(), "an error without a message"
        if out is not None:
            after = snapshot(out) if out.exists() else {}
            assert all(after.get(k) == v for k, v in kept.items()), "a refused command changed --out"
    assert snapshot(area, (out,) if out is not None else ()) == before, "wrote outside --out"
    return res


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----- image files: build-dataset folder, sr, evaluate fid ----------------------------------------
def _save(fmt: str, name: str, convert: str | None = None, **kw) -> Callable[[Path, Image.Image], None]:
    def make(root: Path, im: Image.Image) -> None:
        (im.convert(convert) if convert else im).save(root / name, format=fmt, **kw)
    return make


def _bytes(name: str, data: Callable[[Image.Image], bytes]) -> Callable[[Path, Image.Image], None]:
    def make(root: Path, im: Image.Image) -> None:
        (root / name).write_bytes(data(im))
    return make


def _encoded(im: Image.Image, fmt: str) -> bytes:
    buf = stdio.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _sixteen_bit(root: Path, im: Image.Image) -> None:
    Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257).save(root / "sixteen.png")


def _palette_transparent(root: Path, im: Image.Image) -> None:
    p = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p.info["transparency"] = 0
    p.save(root / "palette.png", transparency=0)


def _exif_rotated(root: Path, im: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed upright after a 90 degree turn
    im.rotate(90, expand=True).save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)


def _symlink_loop(root: Path, im: Image.Image) -> None:
    im.save(root / "good.png")
    (root / "a.jpg").symlink_to(root / "b.jpg")
    (root / "b.jpg").symlink_to(root / "a.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(root / "sub", target_is_directory=True)  # a directory loop


def _directory_named_jpg(root: Path, im: Image.Image) -> None:
    im.save(root / "good.png")
    (root / "x.jpg").mkdir()


IMAGES: dict[str, tuple[Callable[[Path, Image.Image], None], str]] = {
    "zero_byte": (_bytes("zero.jpg", lambda im: b""), "zero-byte file"),
    "truncated_jpeg": (_bytes("cut.jpg", lambda im: _encoded(im, "JPEG")[:600]), "cannot decode"),
    "truncated_png": (_bytes("cut.png", lambda im: _encoded(im, "PNG")[:900]), "cannot decode"),
    "random_bytes_jpg": (_bytes("noise.jpg", lambda im: np.random.RandomState(1).bytes(4000)), "cannot decode"),
    "random_bytes_png": (_bytes("noise.png", lambda im: b"\x89PNG\r\n\x1a\n" + np.random.RandomState(2).bytes(4000)),
                         "cannot decode"),
    "text_named_png": (_bytes("notes.png", lambda im: b"not an image\n"), "cannot decode"),
    "decompression_bomb": (lambda root, im: bomb_png(root / "bomb.png", 50_000), "decompression bomb"),
    "cmyk_jpeg": (_save("JPEG", "cmyk.jpg", "CMYK", quality=95), READ),
    "png_16bit": (_sixteen_bit, READ),
    "grey": (_save("PNG", "grey.png", "L"), READ),
    "palette_transparency": (_palette_transparent, READ),
    "exif_rotated": (_exif_rotated, READ),
    "one_pixel": (lambda root, im: im.resize((1, 1)).save(root / "dot.png"), READ),
    "webp": (_save("WEBP", "photo.webp", quality=95), READ),
    "tiff": (_save("TIFF", "photo.tif"), READ),
    "bmp": (_save("BMP", "photo.bmp"), READ),
    "name_with_spaces": (_save("PNG", "my group photo.png"), READ),
    "name_unicode": (_save("PNG", "visage_é_顔.png"), READ),
    "name_newline": (_save("PNG", "two\nlines.png"), READ),
    "symlink_loop": (_symlink_loop, READ),
    "directory_named_x_jpg": (_directory_named_jpg, READ),
}


@pytest.mark.parametrize("case", list(IMAGES))
def test_image_file(case, area, photo):
    make, reason = IMAGES[case]
    root = area / "in"
    root.mkdir()
    make(root, photo)
    out = area / "out"
    invoke(["build-dataset", "folder", "--root", str(root), "--out", str(out), *FAST], area, out, (0,))
    stats = json.loads((out / "stats.json").read_text())["counts"]
    bad = table(out / "unreadable.csv")
    if reason:
        assert [r["reason"] for r in bad] and reason in bad[0]["reason"] and stats["items_unreadable"] == 1
    else:
        assert bad == [] and stats["items"] == stats["items_read"] == 1
    sr_out = area / "sr"
    res = invoke(["sr", "bicubic", str(root), "--out", str(sr_out)], area, sr_out, (1,) if reason else (0,))
    if reason:
        assert "skipped" in res.output and reason in res.output
    else:
        written = list(sr_out.rglob("*.png"))
        assert len(written) == 1 and read_rgb(written[0]).shape == (64, 64, 3)


@pytest.mark.parametrize("case, why", [("decompression_bomb", "decompression bomb"), ("truncated_png", "truncated"),
                                       ("zero_byte", "zero-byte file")])
def test_image_file_in_fid(case, why, area, photo, sample_dir):
    a, b = area / "a", area / "b"
    for d, faces in ((a, slice(0, 3)), (b, slice(3, 6))):
        d.mkdir()
        for p in sorted((sample_dir / "genuine_lr").glob("*.png"))[faces]:
            shutil.copy(p, d / p.name)
    IMAGES[case][0](a, photo)
    res = invoke(["evaluate", "fid", str(a), str(b), "--device", "cpu", "--no-cache"], area, None, (1,))
    assert "cannot read image for FID" in res.output and why in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_photo_over_the_pixel_cap_is_a_counted_skip(area, photo):
    root = area / "in"
    root.mkdir()
    photo.save(root / "a.png")
    out = area / "out"
    invoke(["build-dataset", "folder", "--root", str(root), "--out", str(out), *FAST,
            "-o", "detector.max_work_pixels=10000"], area, out, (0,))
    bad = table(out / "unreadable.csv")
    assert len(bad) == 1 and "too large to search" in bad[0]["reason"]
    assert json.loads((out / "stats.json").read_text())["counts"]["items_too_large"] == 1


# ----- video files: build-dataset video --------------------------------------------------------
def _frames(photo: Image.Image, n: int = 3) -> list[np.ndarray]:
    """``n`` RGB frames of the photo at an even size (166x124: codecs want even sides), panned 2 px a frame."""
    a = np.asarray(photo.convert("RGB"))[:124, :166]
    return [np.ascontiguousarray(np.roll(a, 2 * k, axis=1)) for k in range(n)]


def _write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v", fps: float = 10.0) -> None:
    h, w = frames[0].shape[:2] if frames else (124, 166)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened(), f"OpenCV cannot write {fourcc}"
    for f in frames:
        vw.write(np.ascontiguousarray(f[..., ::-1]))
    vw.release()


def _video_bytes(name: str, cut: float | None = None, noise: bool = False) -> Callable[[Path, Image.Image], None]:
    def make(root: Path, im: Image.Image) -> None:
        if noise:
            (root / name).write_bytes(np.random.RandomState(3).bytes(5000))
            return
        _write_video(root / name, _frames(im, 6))
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: int(len(data) * cut)] if cut is not None else data)
    return make


def _rotated_mp4(root: Path, im: Image.Image) -> None:
    """A phone-style video: frames stored turned 90 degrees, a display matrix in the track header
    (tkhd) that turns them back (270); plus the same frames stored upright."""
    _write_video(root / "upright.mp4", _frames(im))
    _write_video(root / "rotated.mp4", [np.ascontiguousarray(np.rot90(f, -1)) for f in _frames(im)])
    data = bytearray((root / "rotated.mp4").read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0
    data[at:at + 36] = struct.pack(">9I", 0, 0xFFFF0000, 0, 0x10000, 0, 0, 0, 0, 0x40000000)
    (root / "rotated.mp4").write_bytes(bytes(data))


def _gif(name: str, size: tuple[int, int] | None = None, durations: tuple[int, ...] = (100, 100, 100)
         ) -> Callable[[Path, Image.Image], None]:
    def make(root: Path, im: Image.Image) -> None:
        frames = [Image.fromarray(f).resize(size) if size else Image.fromarray(f) for f in _frames(im, len(durations))]
        frames[0].save(root / name, save_all=True, append_images=frames[1:], duration=list(durations), loop=0)
    return make


VFR_DURATIONS = (100, 300, 100, 500, 100)  # ms: the frames show at 0, 0.1, 0.4, 0.5 and 1.0 s
VIDEOS: dict[str, tuple[Callable[[Path, Image.Image], None], str, tuple[str, ...]]] = {
    # case -> (make the file(s), reason in unreadable.csv or READ, extra options)
    "zero_byte": (lambda root, im: (root / "cam.mp4").write_bytes(b""), "zero-byte file", ()),
    "zero_frames": (lambda root, im: _write_video(root / "cam.avi", [], "MJPG"), "no decodable frames", ()),
    "truncated_mp4": (_video_bytes("cam.mp4", cut=0.6), "cannot open", ()),  # the index (moov) was at the end
    "random_bytes": (_video_bytes("cam.mp4", noise=True), "cannot open", ()),
    "odd_size_gif": (_gif("cam.gif", size=(165, 123)), READ, ()),
    "variable_frame_rate_gif": (_gif("cam.gif", durations=VFR_DURATIONS), READ, ()),
    "rotated_mp4": (_rotated_mp4, READ, ()),
    "tiny_frames": (lambda root, im: _write_video(root / "cam.mp4", [np.zeros((2, 2, 3), np.uint8)] * 3), READ, ()),
    "shrunk_to_one_pixel": (_video_bytes("cam.mp4"), READ, ("-o", "source.scale=0.001")),
}


@pytest.mark.parametrize("case", list(VIDEOS))
def test_video_file(case, area, photo):
    make, reason, extra = VIDEOS[case]
    root = area / "in"
    root.mkdir()
    make(root, photo)
    _write_video(root / "good.mp4", _frames(photo))  # a good video beside it still builds
    out = area / "out"
    invoke(["build-dataset", "video", "--root", str(root), "--out", str(out), *FAST, "-o", "source.stride=1", *extra],
           area, out, (0,))
    stats = json.loads((out / "stats.json").read_text())
    bad, kept = table(out / "unreadable.csv"), table(out / "manifest.csv")
    rows = kept + table(out / "rejected.csv")
    assert any(r["source"] == "good.mp4" for r in kept) or extra
    if reason:
        assert len(bad) == 1 and bad[0]["line"] == "" and reason in bad[0]["reason"], bad
        assert stats["counts"]["items"] == 3 and not any(r["source"] != "good.mp4" for r in rows)
        return
    assert bad == [] and stats["counts"]["items"] == stats["counts"]["items_read"]
    if case == "odd_size_gif":
        faces = [r for r in rows if r["source"] == "cam.gif"]
        assert faces and all(float(r["x2"]) <= 165.5 and float(r["y2"]) <= 123.5 for r in faces)
    if case == "variable_frame_rate_gif":
        starts = np.cumsum((0,) + VFR_DURATIONS[:-1]) / 1000
        times = {int(r["frame"]): float(r["time_s"]) for r in rows if r["source"] == "cam.gif"}
        assert len(times) >= 4 and all(t == pytest.approx(starts[f], abs=1e-3) for f, t in times.items())
        assert stats["counts"]["frames_vfr"] == 3  # frames 1, 3 and 4 are off the nominal rate
    if case == "rotated_mp4":  # decoded upright: the same faces as the upright copy, within codec noise
        up, turned = (np.array([[float(r["x1"]), float(r["y1"])] for r in rows if r["source"] == n and r["frame"] == "0"]
                               ).reshape(-1, 2) for n in ("upright.mp4", "rotated.mp4"))
        near = np.abs(up[:, None] - turned[None]).sum(-1).min(1) < 2  # per upright face: found in the rotated copy
        assert len(up) >= 5 and near.mean() >= 0.8, (up, turned)


VIDEO_CONFIGS = {
    "scale_zero": ("source.scale=0", "source.scale must be in (0, 1]"),
    "scale_above_one": ("source.scale=2.0", "source.scale must be in (0, 1]"),
    "stride_zero": ("source.stride=0", "source.stride must be >= 1"),
    "negative_track_gap": ("tracks.max_gap=-1", "tracks.max_gap"),
    "negative_track_cap": ("tracks.max_faces=-2", "tracks.max_faces"),
    "iou_above_one": ("tracks.min_iou=1.5", "tracks.min_iou"),
    "size_ratio_below_one": ("tracks.max_size_ratio=0.5", "tracks.max_size_ratio"),
    "track_option_unknown": ("tracks.max_len=3", "unknown TrackConfig option"),
}


@pytest.mark.parametrize("case", list(VIDEO_CONFIGS))
def test_video_config(case, area, photo):
    override, message = VIDEO_CONFIGS[case]
    root = area / "in"
    root.mkdir()
    _write_video(root / "cam.mp4", _frames(photo))
    out = area / "out"
    res = invoke(["build-dataset", "video", "--root", str(root), "--out", str(out), *FAST, "-o", override],
                 area, out, (1, 2))
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_tracks_on_photos_are_refused(area, photo):
    root = area / "in"
    root.mkdir()
    photo.save(root / "a.png")
    out = area / "out"
    res = invoke(["build-dataset", "folder", "--root", str(root), "--out", str(out), *FAST, "-o", "tracks.enabled=true"],
                 area, out, (1, 2))
    assert "links faces across video frames" in res.output and len(res.output.strip().splitlines()) == 1


# ----- WIDER FACE annotations -------------------------------------------------------------------
GT = "wider_face_split/wider_face_train_bbx_gt.txt"
BOX = "30 40 14 15 0 0 0 0 0 0"
WIDER: dict[str, tuple[str | None, str]] = {  # gt text (None: no file) -> reason in unreadable.csv
    "box_inf": (f"0--x/a.jpg\n2\n{BOX}\n10 10 inf 12 0 0 0 0 0 0\n", "non-finite"),
    "box_1e400": (f"0--x/a.jpg\n2\n{BOX}\n10 10 1e400 12 0 0 0 0 0 0\n", "non-finite"),
    "box_nan": (f"0--x/a.jpg\n2\n{BOX}\nnan 10 12 12 0 0 0 0 0 0\n", "non-finite"),
    "box_not_numbers": (f"0--x/a.jpg\n2\n{BOX}\n10 ten 12 12 0 0 0 0 0 0\n", "not numbers"),
    "box_three_columns": (f"0--x/a.jpg\n2\n{BOX}\n10 10 12\n", "has 3 numbers"),
    "box_negative_size": (f"0--x/a.jpg\n2\n{BOX}\n10 10 -12 12 0 0 0 0 0 0\n", "empty box"),
    "box_outside_image": (f"0--x/a.jpg\n2\n{BOX}\n5000 5000 12 12 0 0 0 0 0 0\n", "outside the"),
    "count_not_a_number": (f"0--x/a.jpg\nmany\n{BOX}\n", "number of faces"),
    "record_cut_short": (f"0--x/a.jpg\n3\n{BOX}\n", "ended after 1 of 3"),
    "duplicate_image_record": (f"0--x/a.jpg\n1\n{BOX}\n0--x/a.jpg\n1\n{BOX}\n", "listed twice"),
    "missing_image": (f"0--x/a.jpg\n1\n{BOX}\n0--x/gone.jpg\n1\n{BOX}\n", "missing image"),
    "empty_gt_file": ("", "ERROR:is empty"),
    "missing_gt_file": (None, "ERROR:expected wider_face_split"),
}


@pytest.mark.parametrize("case", list(WIDER))
def test_widerface_annotations(case, area, photo):
    text, reason = WIDER[case]
    root = area / "wider"
    (root / "WIDER_train" / "images" / "0--x").mkdir(parents=True)
    photo.save(root / "WIDER_train" / "images" / "0--x" / "a.jpg", quality=95)
    if text is not None:
        (root / GT).parent.mkdir(parents=True)
        (root / GT).write_text(text)
    out = area / "out"
    args = ["build-dataset", "widerface", "--root", str(root), "--out", str(out), "-o", 'source.splits=["train"]',
            *FAST]
    if reason.startswith("ERROR:"):
        res = invoke(args, area, out, (1,))
        assert reason[6:] in res.output and len(res.output.strip().splitlines()) == 1
        return
    invoke(args, area, out, (0,))
    bad = table(out / "unreadable.csv")
    assert any(reason in r["reason"] for r in bad), bad
    if case != "count_not_a_number":  # a record without its count is skipped whole
        faces = table(out / "manifest.csv") + table(out / "rejected.csv")
        assert sorted(r["x1"] for r in faces if r["source"].endswith("a.jpg"))[:1] == ["30.0"]  # the good box stays


@pytest.mark.parametrize("case", ["missing", "a_file", "wrong_layout"])
def test_wrong_root(case, area, photo):
    root = area / "root"
    if case == "a_file":
        photo.save(area / "root.png")
        root = area / "root.png"
    elif case == "wrong_layout":
        root.mkdir()
        photo.save(root / "a.png")
    out = area / "out"
    res = invoke(["build-dataset", "widerface", "--root", str(root), "--out", str(out), *FAST], area, out, (1, 2))
    assert str(root.name) in res.output


# ----- folder sidecar boxes ---------------------------------------------------------------------
SIDECAR = {
    "wrong_columns": ("path,left,top\na.png,1,2\n", "ERROR:missing column"),
    "not_numbers": ("path,x1,y1,x2,y2\na.png,1,2,x,9\na.png,30,40,44,55\n", "bad box"),
    "boxes_for_missing_image": ("path,x1,y1,x2,y2\ngone.png,1,2,20,20\na.png,30,40,44,55\n", "missing image"),
    "absolute_and_parent_paths": ("path,x1,y1,x2,y2\n/etc/passwd,1,2,20,20\n../a.png,1,2,20,20\n", "missing image"),
}


@pytest.mark.parametrize("case", list(SIDECAR))
def test_folder_sidecar_boxes(case, area, photo):
    text, reason = SIDECAR[case]
    root = area / "in"
    root.mkdir()
    photo.save(root / "a.png")
    (root / "boxes.csv").write_text(text)
    out = area / "out"
    args = ["build-dataset", "folder", "--root", str(root), "--out", str(out), "-o", 'source.boxes="boxes.csv"', *FAST]
    if reason.startswith("ERROR:"):
        assert reason[6:] in invoke(args, area, out, (1,)).output
        return
    invoke(args, area, out, (0,))
    assert any(reason in r["reason"] for r in table(out / "unreadable.csv"))


# ----- configs: -o overrides and --config files -------------------------------------------------
CONFIGS: dict[str, tuple[list[str], str, str]] = {  # extra args, config file text (or ""), message
    "unknown_key": (["-o", "filters.max_avg_sise=16"], "", "unknown FilterConfig option"),
    "unknown_table": (["-o", "detectr.scales=[2.0]"], "", "unknown BuildConfig option"),
    "wrong_type_scales": (["-o", "detector.scales=big"], "", "detector.scales"),
    "wrong_type_shard_size": (["-o", "build.shard_size=[1, 2]"], "", "build.shard_size"),
    "negative_shard_size": (["-o", "build.shard_size=-3"], "", "build.shard_size"),
    "negative_scale": (["-o", "detector.scales=[-2.0]"], "", "detector.scales must be positive"),
    "negative_pixel_cap": (["-o", "detector.max_work_pixels=-1"], "", "max_work_pixels"),
    "override_without_value": (["-o", "filters.dedupe"], "", "key=value"),
    "config_unknown_key": ([], "[filters]\nmax_avg_sise = 16\n", "unknown FilterConfig option"),
    "config_wrong_type": ([], '[filters]\nmin_score = "high"\n', "filters.min_score"),
    "config_not_toml": ([], "[filters\nmin_score = ", "recipe.toml: not valid TOML"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_config(case, area, photo):
    extra, text, message = CONFIGS[case]
    root = area / "in"
    root.mkdir()
    photo.save(root / "a.png")
    if text:
        (area / "recipe.toml").write_text(text)
        extra = [*extra, "--config", str(area / "recipe.toml")]
    out = area / "out"
    res = invoke(["build-dataset", "folder", "--root", str(root), "--out", str(out), *FAST, *extra], area, out, (1, 2))
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def built_folder(area: Path, photo) -> tuple[Path, Path, list[str]]:
    """``area/in`` holding ``photo`` built into ``area/out``: (root, out, the build command)."""
    root = area / "in"
    root.mkdir()
    photo.save(root / "a.png")
    out = area / "out"
    base = ["build-dataset", "folder", "--root", str(root), "--out", str(out), *FAST]
    invoke(base, area, out, (0,))
    return root, out, base


def test_a_refused_rerun_changes_nothing_already_written(area, photo):
    root, out, base = built_folder(area, photo)
    assert table(out / "manifest.csv")
    for extra in (["-o", "filters.min_avg_size=5"], ["-o", "filters.nope=1"], ["-o", "build.shard_size=0"]):
        invoke([*base, *extra], area, out, (1, 2))  # invoke() asserts that --out is unchanged


# ----- weights files: sr ------------------------------------------------------------------------
class _Payload:
    """Unpickling it would write a marker file (``__reduce__``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _vdsr_weights(path: Path, change: Callable[[dict], None]) -> None:
    cls = get_method("vdsr")
    export_final(cls(cls.make_config("smoke"), "cpu"), path)
    state = torch.load(path, weights_only=True)
    change(state)
    save_checkpoint(path, state)


def _wrong_shape(state: dict) -> None:
    net = next(iter(state["nets"].values()))
    key = next(k for k, v in net.items() if v.ndim == 4)
    net[key] = torch.zeros(3, 3, 1, 1)


WEIGHTS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "empty_file": (lambda p, m: p.write_bytes(b""), "cannot be read as lrfacebench weights"),
    "random_bytes": (lambda p, m: p.write_bytes(np.random.RandomState(3).bytes(3000)),
                     "cannot be read as lrfacebench weights"),
    "pickle_reduce_payload": (lambda p, m: p.write_bytes(pickle.dumps({"method": "bicubic", "x": _Payload(m)})),
                              "cannot be read as lrfacebench weights"),
    "torch_save_reduce_payload": (lambda p, m: torch.save({"method": "bicubic", "x": _Payload(m)}, p),
                                  "cannot be read as lrfacebench weights"),
    "not_a_dict": (lambda p, m: save_checkpoint(p, [1, 2, 3]), "not a lrfacebench checkpoint"),  # type: ignore[arg-type]
    "state_dict_wrong_shape": (lambda p, m: _vdsr_weights(p, _wrong_shape), "does not hold weights of method 'vdsr'"),
    "state_dict_missing_nets": (lambda p, m: _vdsr_weights(p, lambda s: s.pop("nets")),
                                "does not hold weights of method 'vdsr'"),
    "config_wrong_type": (lambda p, m: _vdsr_weights(p, lambda s: s.update(config="big")),
                          "does not hold weights of method 'vdsr'"),
    "unknown_method_name": (lambda p, m: _vdsr_weights(p, lambda s: s.update(method="vdsr2")), "not registered"),
    "module_class_method_name": (lambda p, m: _vdsr_weights(p, lambda s: s.update(method="os.path:join")),
                                 "not registered"),
    "method_name_not_a_string": (lambda p, m: _vdsr_weights(p, lambda s: s.update(method=["vdsr"])),
                                 "not registered"),
}


@pytest.mark.parametrize("case", list(WEIGHTS))
def test_weights_file(case, area, sample_dir):
    make, message = WEIGHTS[case]
    marker = area / "marker.txt"
    weights = area / "w.pt"
    make(weights, marker)
    face = sorted((sample_dir / "genuine_lr").glob("*.png"))[0]
    out = area / "sr"
    res = invoke(["sr", str(weights), str(face), "--out", str(out), "--device", "cpu"], area, out, (1,))
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not marker.exists() and not out.exists()


def test_a_run_directory_without_weights(area, sample_dir):
    (area / "run" / "checkpoints").mkdir(parents=True)
    (area / "run" / "checkpoints" / "00_x_done.pt").write_bytes(b"broken")
    face = sorted((sample_dir / "genuine_lr").glob("*.png"))[0]
    res = invoke(["sr", str(area / "run"), str(face), "--out", str(area / "sr")], area, area / "sr", (1,))
    assert "no final.pt and no checkpoint" in res.output


# ----- manifests and exclusion lists naming paths outside the dataset -----------------------------
def test_manifest_paths_outside_the_dataset_are_skipped(area, photo, caplog):
    root = area / "data"
    (root / "lr16").mkdir(parents=True)
    photo.resize((16, 16)).save(root / "lr16" / "ok.png")
    photo.resize((16, 16)).save(area / "outside.png")
    rows = [("ok", "lr16/ok.png"), ("up", "../outside.png"), ("abs", str(area / "outside.png"))]
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["face_id", "source", "identity", "split", "lr16", "hr64", "crop"])
        w.writerows((fid, "x.jpg", "", "train", p, "", "") for fid, p in rows)
    faces = list_dataset(root, "lr")
    assert faces.names == ["ok"] and faces.paths == [root / "lr16" / "ok.png"]
    assert "2 of 3 rows name files outside" in caplog.text
    with open(root / "manifest.csv", "w", newline="") as f:
        f.write("face_id,source,identity,split,lr16,hr64,crop\nup,x.jpg,,train,../outside.png,,\n")
    with pytest.raises(DatasetError, match="outside"):
        list_dataset(root, "lr")


@pytest.mark.parametrize("kind", ["text", "csv"])
def test_exclusion_list_with_parent_and_absolute_paths(kind, area, photo):
    root, out, base = built_folder(area, photo)
    before = table(out / "manifest.csv")
    ex = area / f"exclude.{'txt' if kind == 'text' else 'csv'}"
    ex.write_text("../../etc/passwd\n/etc/passwd\n" if kind == "text" else
                  "source,x1,y1,x2,y2\n../a.png,0,0,10,10\n/etc/passwd,0,0,10,10\n")
    invoke([*base, "--exclude", str(ex)], area, out, (0,))
    assert table(out / "manifest.csv") == before  # nothing matched, nothing escaped
