"""Throughput of ``lrfb build-dataset`` at the default (LR-PIPA) settings, the former detector
search beside today's, in one run.

Builds the ``folder`` recipe (MTCNN searching x1-x4, all filters) over real photos -- by default
the embedded sample's 13 scenes (nine 500 px PASCAL VOC photos, two 1024 px crowd photos, two
WIDER FACE photos) -- into a temporary folder, once per detector setting, each in a fresh
process so that its peak memory is its own:

* ``pyramid``: today's default (``detector.schedule = "pyramid"``, P-Net threshold 0.7), which
  searches only the pyramid levels finding faces of the size filter's window, with
  ``detector.level_margins`` = (0, 1) levels of margin below and above it;
* ``wide_levels``: the pyramid's former level set (``detector.level_margins=[1, 1000]``: one level
  below the smallest face, none cut above);
* ``per_scale``: the former search (``detector.schedule=per_scale``, thresholds 0.8, 0.7, 0.6).

For each it prints photos/s, megapixels/s, faces kept/s, the wall and detector time, the peak
resident memory of the build process and of its largest worker (``ru_maxrss``), and the fraction
of the P-Net FLOP floor achieved: the P-Net FLOPs of the pyramid levels the setting searches,
counted from P-Net's layer shapes (``cascade.pnet_flops``), at the conv speed measured in the same
run (a 16->32 3x3 convolution, P-Net's largest layer, timed in this process), divided by the
detector's time per process (the time summed over the shards, divided by the processes that
ran at once). ``x4 floor`` uses the FLOPs of one x4 pyramid of every photo instead (the
floor issue 19 states), the same for both settings.

    python benchmarks/bench_build.py --workers 2              # sample scenes, every setting, CPU
    python benchmarks/bench_build.py --workers 2 --recall     # and each one's recall at 12 and 9 px
    python benchmarks/bench_build.py --settings pyramid --root PHOTOS --workers 2 --limit 50
    python benchmarks/bench_build.py --huge 8000x6000 --settings pyramid  # one 48 MP photo (a sample
                                                        # crowd photo enlarged): detector.max_work_pixels
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

SETTINGS = {"pyramid": [], "wide_levels": ["detector.level_margins=[1, 1000]"],
            "per_scale": ["detector.schedule=per_scale", "detector.thresholds=[0.8, 0.7, 0.6]"]}


def run(root: Path, device: str, workers: int, limit: int | None, overrides: list[str]) -> dict[str, float]:
    """One build in this process; its counts, times and peak RSS (MB, this process / largest worker)."""
    from lrfacebench.data.build import build
    from lrfacebench.data.recipe import resolve_config

    cfg = resolve_config("folder", None, overrides, limit, device)
    out = Path(tempfile.mkdtemp(prefix="bench_build_")) / "out"
    try:
        t = time.perf_counter()
        result = build(cfg, root, out, workers=workers)
        wall = time.perf_counter() - t
        stats = json.loads((out / "stats.json").read_text())
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    assert result is not None
    c = stats["counts"]
    # RUSAGE_CHILDREN: a forked helper such as ``git`` counts the pages it shares with this
    # process, so the worker figure only means something with worker processes
    procs = min(max(1, workers), math.ceil(c["items"] / cfg.build.shard_size))  # processes detecting at once
    return {"photos": c["items_read"], "kept": c["kept"], "wall_s": wall, "procs": procs,
            "detect_s": stats["timings"].get("detect_s", 0.0), "too_large": c.get("items_too_large", 0),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def pnet_work(root: Path, limit: int | None, overrides: list[str]) -> tuple[float, float, float]:
    """(megapixels, P-Net FLOPs of the levels this setting searches, FLOPs of one x4 pyramid) of
    the photos below ``root`` (the first ``limit``), from their sizes and the recipe's detector."""
    from facenet_pytorch.models.mtcnn import PNet

    from lrfacebench.data.cascade import level_scales, level_size, pnet_flops
    from lrfacebench.data.detect import bounded_scales
    from lrfacebench.data.recipe import resolve_config
    from lrfacebench.io import list_images, open_image

    cfg = resolve_config("folder", None, overrides, limit, "cpu")
    d, window = cfg.detector, (cfg.filters.min_avg_size, cfg.filters.max_avg_size)
    pnet = PNet(pretrained=False)
    mp = searched = x4 = 0.0

    def pyramid(w: int, h: int, top: float, faces: tuple[float, float] = (0.0, math.inf)) -> float:
        return sum(pnet_flops(pnet, *level_size((0, 0, w, h), s)[::-1])
                   for s in level_scales(w, h, top, d.min_face_size, d.factor, *faces, tuple(d.level_margins)))

    for path in list_images(root)[:limit]:
        with open_image(path) as im:
            w, h = im.size
        mp += w * h / 1e6
        scales = bounded_scales(w, h, d, window[0])
        x4 += pyramid(w, h, max(d.scales))
        if not scales:
            continue
        searched += (pyramid(w, h, max(scales), window) if d.schedule == "pyramid"
                     else sum(pyramid(w, h, s) for s in scales))
    return mp, searched, x4


def recall(overrides: list[str]) -> str:
    """Recall / precision of the setting's detector on the detection test's photos (the sample's
    dlib photos, 43 faces, shrunk to 12 and 9 px; quality filters; IoU >= 0.4): searching every
    level as the test does, and within the size filter's window as a build does."""
    from lrfacebench.data.annotated import evaluate_on_annotated, load_dlib_annotated
    from lrfacebench.data.detect import make_detector
    from lrfacebench.data.filters import FilterConfig, quality_filter
    from lrfacebench.data.recipe import resolve_config
    from lrfacebench.data.sources.sample import default_root

    cfg = resolve_config("folder", None, overrides, None, "cpu")
    det, keep = make_detector(cfg.detector), quality_filter(FilterConfig())
    window = (cfg.filters.min_avg_size, cfg.filters.max_avg_size)

    # what a build searches: the levels of the size filter's window
    windowed = SimpleNamespace(name=det.name, detect=partial(det.detect, rois=None, smallest_face=window[0],
                                                             largest_face=window[1]))
    _, photos, boxes = load_dlib_annotated(default_root() / "scenes" / "dlib_faces")
    parts = []
    for label, d in (("every level", det), ("build window", windowed)):
        for px in (12, 9):
            r = evaluate_on_annotated(d, photos, boxes, px, verify=keep)
            parts.append(f"{label} {px} px R {r['recall']:.3f} P {r['precision']:.3f}")
    return "; ".join(parts)


def conv_speed() -> float:
    """FLOP/s of a 16->32 3x3 convolution (P-Net's conv3) on a 1024x1024 map, best of 5."""
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(1, 16, 1024, 1024).contiguous(memory_format=torch.channels_last), torch.randn(32, 16, 3, 3)
    flops = 2 * 1022 * 1022 * 32 * 16 * 9
    best = float("inf")
    with torch.inference_mode():
        F.conv2d(x, w)
        for _ in range(5):
            t = time.perf_counter()
            F.conv2d(x, w)
            best = min(best, time.perf_counter() - t)
    return flops / best


_MAKE_PHOTO = """
import sys, cv2
from lrfacebench.data.sources.sample import default_root
w, h, dest = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rgb = cv2.imread(str(default_root() / "scenes" / "ultralight_groups" / "ultralight_25.jpg"))
cv2.imwrite(dest, cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 90])
"""


def huge_photo(size: str) -> Path:
    """A folder holding one ``WxH`` JPEG: a sample crowd photo enlarged (bicubic), quality 90,
    made in another process so that its memory is not counted in the build's peak RSS."""
    w, h = (int(v) for v in size.lower().split("x"))
    root = Path(tempfile.mkdtemp(prefix="bench_huge_"))
    subprocess.run([sys.executable, "-c", _MAKE_PHOTO, str(w), str(h), str(root / f"huge_{w}x{h}.jpg")], check=True)
    return root


def child(args: argparse.Namespace, overrides: list[str]) -> dict[str, float]:
    """:func:`run` in a fresh process (so that its peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--child", "--root", str(args.root), "--workers", str(args.workers),
           "--device", args.device, *(["--limit", str(args.limit)] if args.limit else [])]
    for o in overrides:
        cmd += ["-o", o]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    import torch

    from lrfacebench.data.sources.sample import default_root

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=default_root() / "scenes", help="folder of photos")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="first N photos only")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[],
                    help="recipe override KEY=VALUE, for every setting")
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--huge", metavar="WxH", help="build one photo of this size instead of --root")
    ap.add_argument("--device", default="cpu", help="detector device (cpu, cuda, auto)")
    ap.add_argument("--recall", action="store_true",
                    help="also print each setting's recall/precision on the detection test's photos")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run(args.root, args.device, args.workers, args.limit, args.overrides)))
        return
    if args.huge:
        args.root = huge_photo(args.huge)
    speed = conv_speed()
    print(f"build throughput, folder recipe (LR-PIPA defaults), {args.root}, workers={args.workers}, "
          f"device={args.device}, torch threads={torch.get_num_threads()}; conv speed {speed / 1e9:.1f} GFLOP/s "
          f"(16->32 3x3 conv on 1024x1024, this process)")
    rows = {}
    for name in args.settings:
        overrides = SETTINGS[name] + args.overrides
        mp, searched, x4 = pnet_work(args.root, args.limit, overrides)
        r = rows[name] = child(args, overrides)
        det = max(r["detect_s"], 1e-9) / r["procs"]  # detector seconds per process running at once
        print(f"{name:>11}: {r['photos'] / r['wall_s']:.3f} photos/s, {mp / r['wall_s']:.3f} MP/s, "
              f"{r['kept'] / r['wall_s']:.2f} faces/s kept ({r['photos']} photos, {mp:.2f} MP, {r['kept']} faces, "
              f"{r['wall_s']:.1f} s wall, {r['detect_s']:.1f} s in the detector over {r['procs']} process(es), "
              f"{r['too_large']} too large); "
              f"P-Net {searched / 1e12:.3f} TFLOP searched = {searched / speed:.1f} s at the conv speed, "
              f"{searched / speed / det:.2f} of that floor; x4 floor {x4 / 1e12:.3f} TFLOP, "
              f"{x4 / speed / det:.2f} of it; peak RSS {r['rss_mb']:.0f} MB, "
              f"largest worker {r['worker_rss_mb']:.0f} MB" + ("" if args.workers > 1 else " (no workers)"))
        if args.recall:
            print(f"{name:>11}: {recall(overrides)}")
    old = rows.get("per_scale")
    for name, new in rows.items():
        if old is not None and name != "per_scale":
            print(f"{name} / per_scale: {(new['photos'] / new['wall_s']) / (old['photos'] / old['wall_s']):.1f}x "
                  f"photos/s, {old['detect_s'] / max(new['detect_s'], 1e-9):.1f}x less detector time")
    if args.huge:
        shutil.rmtree(args.root, ignore_errors=True)


if __name__ == "__main__":
    main()
