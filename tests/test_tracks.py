"""Face tracks in video: the linker on boxes, then ``lrfb build-dataset video`` on the real clip of
the embedded sample (``video/arcade.mp4``: pedestrians in a London arcade, 16 frames at 12.5 fps)
shrunk x0.5 so that its faces are 5-16 px: frame indices and times, crops cut from exactly the
frame they name, tracks that cross shard borders, identities from tracks, near-duplicates within
a track, the per-track cap, and the same tracks whatever the shard size."""
from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from lrfacebench.cli import main
from lrfacebench.data.detect import box_iou
from lrfacebench.data.manifest import COLUMNS as MANIFEST_COLUMNS
from lrfacebench.data.tracks import TRACKED_REASONS, TrackConfig, link
from lrfacebench.io import read_rgb

CLIP = "video/arcade.mp4"
FPS = 12.5  # the clip's rate: every 2nd frame of the 25 fps original
SCALE = 0.5
MAX_FACES = 5
ARGS = ["-o", "detector.scales=[2.0]", "--device", "cpu", "-o", f"source.scale={SCALE}", "-o", "source.stride=1",
        "-o", f"tracks.max_faces={MAX_FACES}"]


# ---- the linker ------------------------------------------------------------------------------------
def sq(cx: float, cy: float, side: float) -> tuple[float, float, float, float]:
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def test_link_follows_faces_and_starts_new_tracks_where_the_gates_say():
    cfg = TrackConfig(enabled=True, min_iou=0.3, max_shift=1.0, max_size_ratio=2.0, max_gap=1)
    # two 10 px faces walking towards each other 6 px per step (0.6 face sizes); listed in either order
    steps = [[sq(20 + 6 * t, 50, 10), sq(80 - 6 * t, 50, 10)][:: -1 if t % 2 else 1] for t in range(4)]
    ids = link(steps, cfg)
    assert [sorted(zip((b[0] for b in s), i)) for s, i in zip(steps, ids)] == [
        [(15 + 6 * t, 0), (75 - 6 * t, 1)] for t in range(4)]
    # one missed step is bridged (with twice the shift allowed), two are not
    gap = [[sq(20, 50, 10)], [], [sq(32, 50, 10)], [], [], [sq(32, 50, 10)]]
    assert link(gap, cfg) == [[0], [], [0], [], [], [1]]
    # a face over twice the size at the same place, or one jump of 1.5 face sizes, is someone else
    assert link([[sq(50, 50, 10)], [sq(50, 50, 21)]], cfg) == [[0], [1]]
    assert link([[sq(50, 50, 10)], [sq(65, 50, 10)]], cfg) == [[0], [1]]
    # overlap alone links (IoU 0.44 here), whatever the centres' distance
    assert link([[sq(50, 50, 10)], [sq(53, 50, 14)]], TrackConfig(max_shift=0.0)) == [[0], [0]]
    assert link([[sq(50, 50, 10)], [sq(53, 50, 14)]], TrackConfig(max_shift=0.0, min_iou=0.5)) == [[0], [1]]
    # two faces of one frame never share a track, even when both fit it: the nearer one continues it
    assert link([[sq(50, 50, 10)], [sq(46, 50, 10), sq(51, 50, 10)]], cfg) == [[0], [1, 0]]


# ---- the real clip -----------------------------------------------------------------------------------
def build(root: Path, out: Path, *extra: str) -> dict[str, list[dict[str, str]]]:
    res = CliRunner().invoke(main, ["build-dataset", "video", "--root", str(root), "--out", str(out), *ARGS, *extra],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tables = {}
    for name in ("manifest", "rejected", "unreadable"):
        with open(out / f"{name}.csv", newline="") as f:
            reader = csv.DictReader(f)
            tables[name] = list(reader)
            if name == "manifest":
                assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
    return tables


@pytest.fixture(scope="module")
def clip(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict[str, str]]]]:
    """The sample clip built in shards of 3 frames: (output folder, its tables)."""
    out = tmp_path_factory.mktemp("arcade") / "out"
    return out, build(sample_dir / CLIP, out, "-o", "build.shard_size=3")


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of the clip as the build sees it: RGB, shrunk by SCALE with area averaging."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        frames.append(cv2.resize(bgr, (round(w * SCALE), round(h * SCALE)), interpolation=cv2.INTER_AREA)[..., ::-1])
    return frames


def face_id(r: dict[str, str]) -> str:
    """A manifest row's face id or a rejected row's candidate id (``sSSSSS-NNNNNN``)."""
    return r.get("face_id") or r["candidate"]


def crop_at(frame: np.ndarray, r: dict[str, str]) -> np.ndarray:
    from lrfacebench.data.filters import crop_face

    return crop_face(np.ascontiguousarray(frame), tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2")))


def test_clip_frames_times_and_crops_come_from_the_frame_they_name(clip, sample_dir):
    out, t = clip
    rows = t["manifest"]
    frames = decoded_frames(sample_dir / CLIP)
    assert len(frames) == 16 and frames[0].shape == (120, 200, 3)
    assert t["unreadable"] == [] and len(rows) >= 10
    assert len({r["frame"] for r in rows}) >= 8
    for r in rows:
        f = int(r["frame"])
        assert 0 <= f < 16 and float(r["time_s"]) == round(f / FPS, 3) and r["source"] == "arcade.mp4"
        assert (float(r["width"]) + float(r["height"])) / 2 <= 16.0
        # the stored native crop is cut from exactly this frame of the shrunk video, not a neighbour
        crop = read_rgb(out / r["crop"])
        err = [np.abs(crop_at(g, r).astype(int) - crop).mean() for g in frames]
        assert err[f] < 1.0 and f == int(np.argmin(err)), (r["face_id"], err)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["frames_vfr"] == 0 and stats["config"]["source"]["scale"] == SCALE
    assert "shrunk by 0.5" in (out / "DATASET_CARD.md").read_text()


def test_clip_tracks_link_faces_across_frames_and_shards_and_give_identities(clip):
    out, t = clip
    rows = t["manifest"]
    tracked = rows + [r for r in t["rejected"] if r["reason"] in (*TRACKED_REASONS, "near_duplicate", "track_cap")]
    assert all(re.fullmatch(r"arcade\.mp4#\d+", r["track_id"]) for r in tracked)
    # identities are the tracks (the clip has no annotations)
    assert all(r["identity"] == f"track:{r['track_id']}" for r in rows)
    by_frame: dict[int, list[dict[str, str]]] = defaultdict(list)
    for r in tracked:
        by_frame[int(r["frame"])].append(r)
    for f, faces in by_frame.items():
        assert len({r["track_id"] for r in faces}) == len(faces), f"two faces of frame {f} share a track"
    # a face that moves little between consecutive frames (IoU >= 0.5) keeps its track
    pairs = 0
    for f in sorted(by_frame):
        for a in by_frame[f]:
            for b in by_frame.get(f + 1, []):
                iou = box_iou(*(np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")]]) for r in (a, b)))[0, 0]
                if iou >= 0.5:
                    pairs += 1
                    assert a["track_id"] == b["track_id"], (face_id(a), face_id(b), iou)
    assert pairs >= 10
    members: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in tracked:
        members[r["track_id"]].append(r)
    longest = max(members.values(), key=len)
    assert len({r["frame"] for r in longest}) >= 10  # one face followed through most of the clip ...
    assert len({face_id(r)[:6] for r in longest}) >= 3  # ... across the borders of 3-frame shards
    stats = json.loads((out / "stats.json").read_text())
    assert stats["tracks"]["tracks_with_faces"] == len({r["track_id"] for r in rows}) == stats["counts"]["identities"]


def test_clip_near_duplicates_and_the_cap_apply_within_a_track(clip):
    out, t = clip
    rows = {r["face_id"]: r for r in t["manifest"]}
    rejected = {r["candidate"]: r for r in t["rejected"]}
    every = {**rejected, **rows}
    dups = [r for r in rejected.values() if r["reason"] == "near_duplicate"]
    assert dups
    for r in dups:  # each names an earlier face of its own track
        m = re.fullmatch(r"duplicates (s\d{5}-\d{6}) \(track (\S+)\)", r["detail"])
        assert m and m.group(2) == r["track_id"] and every[m.group(1)]["track_id"] == r["track_id"]
        assert int(every[m.group(1)]["frame"]) < int(r["frame"])
    kept = defaultdict(list)
    for r in rows.values():
        kept[r["track_id"]].append(int(r["frame"]))
    capped = {r["track_id"] for r in rejected.values() if r["reason"] == "track_cap"}
    assert capped and all(len(v) <= MAX_FACES for v in kept.values())
    for tid in capped:  # a capped track keeps MAX_FACES faces, its first and last among them
        frames = kept[tid] + [int(r["frame"]) for r in rejected.values()
                              if r["reason"] == "track_cap" and r["track_id"] == tid]
        assert len(kept[tid]) == MAX_FACES and {min(frames), max(frames)} <= set(kept[tid])
    for fid, r in rejected.items():  # the merge deleted the PNGs of the faces it dropped
        if r["reason"] in ("track_cap", "near_duplicate"):
            assert not (out / "crops" / f"{fid}.png").exists() and not (out / "lr16" / f"{fid}.png").exists()


def test_clip_tracks_do_not_depend_on_the_shards(clip, sample_dir, tmp_path):
    _, t = clip
    one = build(sample_dir / CLIP, tmp_path / "one", "-o", "build.shard_size=16")

    def key(tables: dict[str, list[dict[str, str]]]) -> set[tuple[str, ...]]:
        return {(r["frame"], r["x1"], r["y1"], r["x2"], r["y2"], r["track_id"], r.get("identity", r.get("reason")))
                for name in ("manifest", "rejected") for r in tables[name]}

    assert key(one) == key(t) and len(one["manifest"]) == len(t["manifest"])
