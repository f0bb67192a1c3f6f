"""Throughput of ``lrfb build-dataset`` at the default (LR-PIPA) settings: photos/s and faces/s.

Builds the ``folder`` recipe (MTCNN at x1-x4, all filters) over real photos -- by default the
embedded sample's 13 scenes (nine 500 px PASCAL VOC photos, four 1024 px crowd photos) -- into a
temporary folder, on the CPU and, when available, on CUDA, and prints one line per device with
the wall time and the peak resident memory (``resource.getrusage`` ru_maxrss of this process and
of its worker processes: the peak so far, so run one device per process for a clean figure).

    python benchmarks/bench_build.py                    # sample scenes, CPU (+ CUDA if present)
    python benchmarks/bench_build.py --root PHOTOS --workers 2 --limit 50
    python benchmarks/bench_build.py --huge 8000x6000 --cpu-only   # one 48 MP photo (a sample
                                                        # crowd photo enlarged): detector.max_work_pixels
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(root: Path, device: str, workers: int, limit: int | None, overrides: list[str]) -> dict[str, float]:
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
    return {"photos": c["items_read"], "candidates": c["candidates"], "kept": c["kept"], "wall_s": wall,
            "detect_s": stats["timings"].get("detect_s", 0.0), "too_large": c.get("items_too_large", 0),
            "reduced": c.get("items_scales_reduced", 0)}


def peak_rss(workers: int) -> str:
    """Peak resident memory so far of this process and, with worker processes, of the largest one
    (RUSAGE_CHILDREN: a forked helper such as ``git`` counts the pages it shares with this process,
    so that figure is only shown for ``--workers`` > 1)."""
    own = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    if workers > 1:
        own += f", largest worker {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB"
    return own


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


def main() -> None:
    import torch

    from lrfacebench.data.sources.sample import default_root

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=default_root() / "scenes", help="folder of photos")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="first N photos only")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    ap.add_argument("--huge", metavar="WxH", help="build one photo of this size instead of --root")
    ap.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    args = ap.parse_args()
    if args.huge:
        args.root = huge_photo(args.huge)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    print(f"build throughput, folder recipe (LR-PIPA defaults), {args.root}, workers={args.workers}, "
          f"torch threads={torch.get_num_threads()}")
    for dev in devices:
        r = run(args.root, dev, args.workers, args.limit, args.overrides)
        name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
        print(f"{name:>24}: {r['photos'] / r['wall_s']:.3f} photos/s, {r['kept'] / r['wall_s']:.2f} faces/s kept, "
              f"{r['candidates'] / r['wall_s']:.2f} candidates/s ({r['photos']} photos, {r['kept']} faces kept, "
              f"{r['wall_s']:.1f} s wall, {r['detect_s']:.1f} s in the detector, {r['too_large']} photo(s) too "
              f"large, {r['reduced']} searched at fewer scales; {peak_rss(args.workers)})")
    if args.huge:
        shutil.rmtree(args.root, ignore_errors=True)


if __name__ == "__main__":
    main()
