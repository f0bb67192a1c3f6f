"""Throughput of ``lrfb build-dataset`` at the default (LR-PIPA) settings: photos/s and faces/s.

Builds the ``folder`` recipe (MTCNN at x1-x4, all filters) over real photos -- by default the
embedded sample's 13 scenes (nine 500 px PASCAL VOC photos, four 1024 px crowd photos) -- into a
temporary folder, on the CPU and, when available, on CUDA, and prints one line per device.

    python benchmarks/bench_build.py                    # sample scenes, CPU (+ CUDA if present)
    python benchmarks/bench_build.py --root PHOTOS --workers 2 --limit 50
"""
from __future__ import annotations

import argparse
import json
import shutil
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
            "detect_s": stats["timings"].get("detect_s", 0.0)}


def main() -> None:
    import torch

    from lrfacebench.data.sources.sample import default_root

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=default_root() / "scenes", help="folder of photos")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="first N photos only")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"build throughput, folder recipe (LR-PIPA defaults), {args.root}, workers={args.workers}, "
          f"torch threads={torch.get_num_threads()}")
    for dev in devices:
        r = run(args.root, dev, args.workers, args.limit, args.overrides)
        name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
        print(f"{name:>24}: {r['photos'] / r['wall_s']:.3f} photos/s, {r['kept'] / r['wall_s']:.2f} faces/s kept, "
              f"{r['candidates'] / r['wall_s']:.2f} candidates/s ({r['photos']} photos, {r['kept']} faces kept, "
              f"{r['wall_s']:.1f} s wall, {r['detect_s']:.1f} s in the detector)")


if __name__ == "__main__":
    main()
