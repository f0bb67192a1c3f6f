"""``lrfb build-dataset`` as a whole: the output contract on the embedded sample, kill -9 and
resume, --workers and --shard equivalence, reviewer exclusions, refusal of a changed recipe,
and the data card."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lrfacebench.cli import main
from lrfacebench.data.annotated import shrink_to_face_size
from lrfacebench.data.manifest import COLUMNS as MANIFEST_COLUMNS
from lrfacebench.data.sources.base import read_dlib_xml
from lrfacebench.io import read_rgb

FAST = ["-o", "detector.scales=[2.0]", "--device", "cpu"]


def cli(*argv: str, ok: bool = True):
    res = CliRunner().invoke(main, list(argv), catch_exceptions=False)
    assert (res.exit_code == 0) == ok, res.output
    return res


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tree_digest(out: Path) -> dict[str, str]:
    """sha256 of every dataset file (what a user gets), keyed by relative path."""
    files = [p for d in ("crops", "lr16", "hr64") if (out / d).is_dir() for p in (out / d).iterdir()]
    files += [out / n for n in ("manifest.csv", "rejected.csv", "unreadable.csv")]
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ---- the embedded sample: the output contract ---------------------------------------------------
def test_sample_build_writes_the_contract(tmp_path, sample_dir):
    out = tmp_path / "sample"
    # all 140 pre-cut genuine-LR crops, then the first 3 photos (annotated dlib/PASCAL VOC scenes)
    res = cli("build-dataset", "sample", "--out", str(out), "--limit", "143", *FAST,
              "-o", 'source.parts=["genuine_lr", "scenes"]', "-o", "build.eval_face_sizes=[12.0]")
    for word in ("inputs", "candidates", "kept", "rejected", "unreadable", "detector", "time"):
        assert f"  {word}" in res.output
    rows = read_csv(out / "manifest.csv")
    assert rows and tuple(rows[0]) == MANIFEST_COLUMNS
    assert [r["face_id"] for r in rows] == sorted(r["face_id"] for r in rows)
    for r in rows:
        assert (sample_dir / r["source"]).is_file()
        crop = read_rgb(out / r["crop"])
        assert crop.shape[0] == crop.shape[1] or r["source"].startswith("genuine_lr/")
        assert read_rgb(out / r["lr16"]).shape == (16, 16, 3) and r["hr64"] == ""
        assert hashlib.sha256((out / r["crop"]).read_bytes()).hexdigest() == r["sha256"]
        assert (float(r["width"]) + float(r["height"])) / 2 <= 16
    assert {r["split"] for r in rows} <= {"train", "test"}
    stats = json.loads((out / "stats.json").read_text())
    c = stats["counts"]
    assert c["kept"] == len(rows) and c["items"] == 143
    assert c["candidates"] == c["kept"] + c["rejected"]
    assert sum(stats["size_histogram"]["kept"].values()) == len(rows)
    sides = [max(1, math.floor(max(float(r["width"]), float(r["height"])) + 0.5)) for r in rows]
    shrunk = sum(s > 16 for s in sides) / len(rows)
    assert stats["size_summary"]["shrunk_share"] == round(shrunk, 4)
    ev = stats["detector_eval"]
    assert ev["native/detector"]["n_gt"] == ev["12px/detector+filters"]["n_gt"] > 0
    assert ev["12px/detector"]["n_tp"] >= ev["12px/detector+filters"]["n_tp"]  # filters only remove
    assert stats["environment"]["torch"] and stats["config"]["detector"]["scales"] == [2.0]
    assert "provenance.csv" in stats["source_hashes"]["annotations"]
    rejected = read_csv(out / "rejected.csv")
    assert len(rejected) == c["rejected"] and {"too_large"} <= {r["reason"] for r in rejected}
    assert (out / "unreadable.csv").read_text().splitlines()[0] == "file,line,reason"
    assert (out / "review" / "kept_001.jpg").is_file() and (out / "review" / "rejected_too_large.jpg").is_file()
    index = read_csv(out / "review" / "index.csv")
    assert {r["face_id"] for r in index if r["sheet"] == "kept_001.jpg"} == {r["face_id"] for r in rows}
    card = (out / "DATASET_CARD.md").read_text()
    assert card.startswith("---\n") and "size_categories" in card
    assert f"{shrunk:.1%}: resized by the antialiased bicubic" in card
    for section in ("## Composition", "## Collection process", "size_histogram.png", "| 12px/detector+filters |"):
        assert section in card
    assert "<!-- generated" not in card
    assert Image.open(out / "size_histogram.png").size[0] > 100
    # lrfb card regenerates the card from stats.json with another curated text
    (tmp_path / "mine.md").write_text("# My faces\n\n<!-- generated: composition -->\n\nMine.\n")
    cli("card", str(out), "--text", str(tmp_path / "mine.md"))
    card = (out / "DATASET_CARD.md").read_text()
    assert card.startswith("# My faces")
    assert card.index("## Composition") < card.index("Mine.") < card.index("## Collection")


# ---- kill -9, resume, --workers, --shard -------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_dir) -> Path:
    """Six small real photos with faces of 11-13 px (shrunk dlib/PASCAL VOC scenes)."""
    root = tmp_path_factory.mktemp("photos")
    d = sample_dir / "scenes" / "dlib_faces"
    gt = read_dlib_xml(d / "training.xml")
    k = 0
    for name in ("2007_007763.jpg", "2008_002079.jpg"):
        for size in (13.0, 11.0):
            img, _ = shrink_to_face_size(read_rgb(d / name), gt[name], size)
            for flip in ((False, True) if size == 13.0 else (False,)):
                Image.fromarray(np.ascontiguousarray(img[:, ::-1]) if flip else img).save(root / f"p{k}.png")
                k += 1
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photos) -> Path:
    """An uninterrupted build with two worker processes (forked: a CPU build on Linux)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    cli("build-dataset", "folder", "--root", str(photos), "--out", str(out), "--workers", "2",
        "-o", "build.shard_size=1", *FAST)
    return out


def _argv(photos: Path, out: Path) -> list[str]:
    """``python -c MAIN build-dataset folder ...`` of the kill tests (``[3:]``: the CLI arguments)."""
    return [sys.executable, "-c", "from lrfacebench.cli import main; main()", "build-dataset", "folder",
            "--root", str(photos), "--out", str(out), "-o", "build.shard_size=1", *FAST]


def _spawn(photos: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*_argv(photos, out), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_spawned_workers_build_what_forked_workers_build(tmp_path, photos, reference, monkeypatch):
    """CPU builds fork their workers on Linux; CUDA builds spawn them (fork is unsafe after CUDA
    starts). A spawned pool writes the same files as the forked one of ``reference``."""
    from lrfacebench.data import distribute

    job = lambda device: SimpleNamespace(config={"detector": {"device": device}})  # noqa: E731
    assert distribute.start_method([job("cpu"), job("cpu")]) == "fork"
    assert distribute.start_method([job("cpu"), job("cuda:1")]) == "spawn"
    used = []
    monkeypatch.setattr(distribute, "start_method", lambda jobs: used.append("spawn") or "spawn")
    out = tmp_path / "out"
    cli("build-dataset", "folder", "--root", str(photos), "--out", str(out), "--workers", "2",
        "-o", "build.shard_size=1", *FAST)
    assert used == ["spawn"]
    assert tree_digest(out) == tree_digest(reference)
    assert (out / "manifest.csv").read_bytes() == (reference / "manifest.csv").read_bytes()


@pytest.mark.slow
def test_kill_9_and_resume_equals_uninterrupted_build(tmp_path, photos, reference):
    out = tmp_path / "out"
    for markers in (1, 3):  # kill twice, at different points of the build
        proc = _spawn(photos, out)
        deadline = time.time() + 120
        done = lambda: len(list((out / "shards").glob("s*.json")))  # noqa: E731
        while done() < markers and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done() < 6  # really interrupted
    # a separate job takes the odd shards (--shard 1/2) and stops without merging ...
    res = cli("build-dataset", "folder", "--root", str(photos), "--out", str(out), "--shard", "1/2",
              "-o", "build.shard_size=1", *FAST)
    assert "shard job 1/2 finished" in res.output or "built folder" in res.output
    # ... and the plain rerun finishes the rest and merges
    cli("build-dataset", "folder", "--root", str(photos), "--out", str(out), "-o", "build.shard_size=1", *FAST)
    assert tree_digest(out) == tree_digest(reference)
    assert (out / "manifest.csv").read_bytes() == (reference / "manifest.csv").read_bytes()
    assert not list(out.rglob("*.tmp"))
    ids = [r["face_id"] for r in read_csv(out / "manifest.csv")]
    assert len(ids) == len(set(ids)) >= 10


@pytest.mark.slow
@pytest.mark.parametrize("seed, to_group, moment", [(0, False, "build"), (1, True, "build"), (2, True, "startup")])
def test_sigint_at_a_random_moment_then_rerun_equals_uninterrupted_build(tmp_path, photos, reference, seed,
                                                                          to_group, moment):
    """Ctrl-C (SIGINT, to the command or, like a terminal, to its process group with the workers)
    at a seeded random moment of the build (or of the start, while torch is imported), then the
    same command again: the same dataset as an uninterrupted build, and a one-line message
    instead of a traceback (or a crash of half-imported torch)."""
    import random

    out = tmp_path / "out"
    # Every shard takes at least PACE_S (the workers run paced_run_shard), so however fast the
    # machine, 2 of the 3 rounds of 2 shards are still to come when the first record appears.
    (tmp_path / "paced.py").write_text(
        "import time\nfrom lrfacebench.data import worker\nPACE_S = 0.4\n"
        "def paced_run_shard(job, progress=None):\n    time.sleep(PACE_S)\n"
        "    return worker.run_shard(job, progress)\n")
    argv = _argv(photos, out)
    if moment == "build":  # (paced imports torch: at startup the CLI must do it)
        argv[2] = "import paced, lrfacebench.data.distribute as d; d.run_shard = paced.paced_run_shard; " + argv[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    rng = random.Random(seed)
    # SIGINT at its default in the command, as in a terminal, even when pytest itself ignores it
    # (a shell's background job does, and a child inherits an ignored signal)
    proc = subprocess.Popen([*argv, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=to_group,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if moment == "startup":
        time.sleep(rng.uniform(0.3, 1.5))  # seconds after the launch: torch is being imported, or just was
    else:
        deadline = time.time() + 120
        while not list((out / "shards").glob("s*.json")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))  # seconds after the first shard record (of 6)
        assert proc.poll() is None and len(list((out / "shards").glob("s*.json"))) < 6, "finished before the signal"
    (os.killpg if to_group else os.kill)(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    expected = ("Aborted!", "interrupted: run the same command again")[moment == "build":]
    assert proc.returncode == 1 and any(e in output for e in expected), output
    assert "Traceback" not in output and "Error:" not in output.replace("Error: interrupted", ""), output
    assert not (out / "manifest.csv").exists()  # really interrupted before the merge
    cli(*_argv(photos, out)[3:])
    assert tree_digest(out) == tree_digest(reference)
    assert (out / "manifest.csv").read_bytes() == (reference / "manifest.csv").read_bytes()
    assert not list(out.rglob("*.tmp"))


def test_exclusions_apply_on_rerun_and_can_be_undone(tmp_path, photos, reference):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    rows = read_csv(out / "manifest.csv")
    by_id, by_box = rows[0], rows[-1]
    (tmp_path / "ids.txt").write_text(f"# reviewer: not a face\n{by_id['face_id']}\n")
    with open(tmp_path / "boxes.csv", "w", newline="") as f:  # a row copied from manifest.csv
        w = csv.DictWriter(f, fieldnames=list(by_box))
        w.writeheader()
        w.writerow({**by_box, "face_id": ""})
    run = ("build-dataset", "folder", "--root", str(photos), "--out", str(out), "-o", "build.shard_size=1", *FAST)
    cli(*run, "--exclude", str(tmp_path / "ids.txt"), "--exclude", str(tmp_path / "boxes.csv"))
    after = read_csv(out / "manifest.csv")
    assert [r["face_id"] for r in after] == [r["face_id"] for r in rows[1:-1]]
    excluded = [r for r in read_csv(out / "rejected.csv") if r["reason"] == "excluded"]
    assert {r["candidate"] for r in excluded} == {by_id["face_id"], by_box["face_id"]}
    assert not (out / by_id["crop"]).exists() and not (out / by_box["lr16"]).exists()
    cli(*run)  # the decisions persist in OUT/exclusions.csv
    assert len(read_csv(out / "manifest.csv")) == len(rows) - 2
    (out / "exclusions.csv").unlink()
    cli(*run)  # undone: the two shards are rebuilt and the dataset equals the reference again
    assert tree_digest(out) == tree_digest(reference)


def test_changed_recipe_is_refused_unless_overwrite(tmp_path, photos, reference):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    run = ("build-dataset", "folder", "--root", str(photos), "--out", str(out), "-o", "build.shard_size=1", *FAST)
    res = cli(*run, "-o", "filters.max_avg_size=12", ok=False)
    assert "different config" in res.output
    cli(*run, "-o", "filters.max_avg_size=12", "--overwrite")
    assert all((float(r["width"]) + float(r["height"])) / 2 <= 12 for r in read_csv(out / "manifest.csv"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("keep me")
    res = cli("build-dataset", "folder", "--root", str(photos), "--out", str(tmp_path / "busy"), ok=False)
    assert "holds no build" in res.output and (tmp_path / "busy" / "thesis.tex").exists()


def test_dry_run_and_bad_options(tmp_path, photos):
    res = cli("build-dataset", "folder", "--root", str(photos), "--out", str(tmp_path / "o"), "--dry-run")
    assert "6 items in 1 shards" in res.output and not (tmp_path / "o").exists()
    assert "unknown" in cli("build-dataset", "folder", "--root", str(photos), "--out", str(tmp_path / "o"),
                            "-o", "source.bogus=1", ok=False).output
    assert "--root is required" in cli("build-dataset", "pipa", "--out", str(tmp_path / "o"), ok=False).output
    assert "expected annotations/index.txt" in cli("build-dataset", "pipa", "--root", str(photos), "--out",
                                                   str(tmp_path / "o"), ok=False).output
