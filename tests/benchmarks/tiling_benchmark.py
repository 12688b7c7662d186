#!/usr/bin/env python
"""WSI tiling: the library's mask + integral-image tiling vs reading every x20 tile.

Writes N demo slides (Camelyon16 format) in a temporary folder, then, in this one process and
on the same slides, times
  wsi:   open + tissue mask (one low-resolution read) + x5/x10/x20 tiling from the mask +
         HDF5 and PNG writes (``workflow.wsi.tiling.tile_file``, the whole stage), and
  naive: open + read_region of every x20 grid tile + a saturation test per tile
         (``tests/wsi/reference_tiling.py``, finest scale only),
and prints each one's slides/s and tiles/s (kept tiles; all scales for wsi, x20 for naive),
their ratio, and how far their x20 tile sets agree. Best of ``--repeats`` runs each.

    python tests/benchmarks/tiling_benchmark.py --slides 8
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.wsi.reference_tiling import naive_tiling  # noqa: E402
from workflow.wsi.demo import DemoSettings, write_demo  # noqa: E402
from workflow.wsi.slide import open_slide  # noqa: E402
from workflow.wsi.tiling import tile_file  # noqa: E402


def run_wsi(slides: list[Path], out: Path) -> tuple[float, int, list[set]]:
    started, tiles, x20 = time.perf_counter(), 0, []
    for path in slides:
        tiling = tile_file(
            path,
            out / f"{path.stem}.h5",
            thumbnail_png=out / f"{path.stem}.thumb.png",
            mask_png=out / f"{path.stem}.mask.png",
        )
        tiles += sum(tiling.counts.values())
        x20.append({tuple(c) for c in tiling["x20"].coords.tolist()})
    return time.perf_counter() - started, tiles, x20


def run_naive(slides: list[Path]) -> tuple[float, int, list[set]]:
    started, tiles, x20 = time.perf_counter(), 0, []
    for path in slides:
        with open_slide(path) as slide:
            coords, _ = naive_tiling(slide, magnification=20)
        tiles += len(coords)
        x20.append({tuple(c) for c in coords.tolist()})
    return time.perf_counter() - started, tiles, x20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=8, help="demo slides to generate")
    parser.add_argument("--width", type=int, default=4096, help="level-0 px (x40)")
    parser.add_argument("--height", type=int, default=4096, help="level-0 px (x40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = DemoSettings(
        slides=args.slides, width=args.width, height=args.height, seed=args.seed
    )
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "camelyon16", Path(tmp) / "tiles"
        started = time.perf_counter()
        write_demo(root, settings)
        print(
            f"demo: {args.slides} slides of {args.width}x{args.height} px at x40 "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        slides = sorted((root / "slides").glob("*.tif"))
        results = {}
        for name in ("naive", "wsi"):
            best = None
            for _ in range(args.repeats):
                got = run_naive(slides) if name == "naive" else run_wsi(slides, out)
                if best is None or got[0] < best[0]:
                    best = got
            results[name] = best
        for name, (seconds, tiles, _) in results.items():
            print(
                f"{name:>5}: {seconds:7.3f} s  {len(slides) / seconds:8.2f} slides/s  "
                f"{tiles / seconds:9.1f} tiles/s  ({tiles} tiles)"
            )
        ratio = results["naive"][0] / results["wsi"][0]
        print(f"ratio: wsi is {ratio:.1f}x faster per slide (target >= 2x)")
        same = sum(len(a & b) for a, b in zip(results["wsi"][2], results["naive"][2], strict=True))
        union = sum(len(a | b) for a, b in zip(results["wsi"][2], results["naive"][2], strict=True))
        print(f"x20 agreement: {same}/{union} tiles in both ({same / max(union, 1):.0%})")


if __name__ == "__main__":
    main()
