#!/usr/bin/env python
"""WSI segmentation end to end: the library vs a CLAM-style baseline, on large slides whose
true tissue is known.

Writes (or reuses, in ``--folder``) N synthetic 40k x 40k slides at 0.25 um/px as JPEG-tiled
pyramidal TIFFs (tests/benchmarks/large_slides.py; a x4 pyramid by default, ``--pyramid 2``
for Camelyon16's x2), then, in this one process and on the same slides, times per slide
  wsi:  open_slide + segment_tissue + tile_slide (x5/x10/x20 coordinates; no file written),
  clam: OpenSlide + the level best for downsample 64 + HSV saturation, median blur (7),
        binary threshold (8 of 255, or Otsu with ``--clam-otsu``), closing (4 x 4), contours
        (RETR_CCOMP) filtered by area (a_t 100, a_h 16 reference 512^2 patches, at most 8
        holes), then per contour a grid from its bounding box whose tiles are kept when one
        of four points (centre +- a quarter tile) lies in the contour and the centre lies in
        no hole: CLAM's segmentTissue / process_contour defaults (create_patches_fp.py),
        written here from their description, run serially (CLAM spreads the point tests over
        a process pool, which only adds start-up time at this size),
and prints the median and the best of ``--repeats`` seconds per slide of each (the sides
alternate within each repeat), their ratios, and how each x20
tile set (256 px at x20 = 512 level-0 px) agrees with the truth:
  precision  kept tiles whose true tissue fraction reaches --min-tissue,
  empty      kept tiles with under 5% true tissue,
  recall     true tissue under the kept tiles / true tissue under the ideal tile set (the
             level-0 grid's tiles whose true fraction reaches --min-tissue),
  iou        |kept & ideal| / |kept | ideal| on the level-0 grid (wsi; CLAM's grids start at
             each contour's bounding box, so only its tiles that fall on the grid count).

    python tests/benchmarks/segment_benchmark.py --slides 4 --folder /tmp/large_slides
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.large_slides import CELL, LargeSlide, large_slides  # noqa: E402
from workflow.wsi.segment import segment_tissue  # noqa: E402
from workflow.wsi.slide import open_slide  # noqa: E402
from workflow.wsi.tiling import integral_image, tile_slide, tissue_fraction  # noqa: E402

FOOTPRINT = 512  # level-0 px of a 256-px x20 tile on a 0.25 um/px slide


# --------------------------------------------------------------------------- the two sides
def wsi_tiles(path: Path, min_tissue: float, segment: dict[str, float]) -> np.ndarray:
    with open_slide(path) as slide:
        tissue = segment_tissue(slide, **segment)
        tiling = tile_slide(slide, tissue, min_tissue=min_tissue)
    return tiling["x20"].coords


def clam_tiles(path: Path, otsu: bool = False) -> np.ndarray:
    import cv2
    import openslide

    osr = openslide.OpenSlide(str(path))
    try:
        level = osr.get_best_level_for_downsample(64)
        scale = osr.level_downsamples[level]
        rgb = np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))
    finally:
        osr.close()
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2HSV)
    sat = cv2.medianBlur(np.ascontiguousarray(hsv[..., 1]), 7)
    if otsu:
        _, binary = cv2.threshold(sat, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
    else:
        _, binary = cv2.threshold(sat, 8, 255, cv2.THRESH_BINARY)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((4, 4), np.uint8))
    ref_area = int(512**2 / (scale * scale))  # one reference patch, in level px
    min_area, min_hole = 100 * ref_area, 16 * ref_area
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return np.zeros((0, 2), np.int64)
    parents = hierarchy[0][:, 3]
    kept: list[tuple[np.ndarray, list[np.ndarray]]] = []
    for i in np.flatnonzero(parents == -1):
        holes = [contours[j] for j in np.flatnonzero(parents == i)]
        area = cv2.contourArea(contours[i]) - sum(cv2.contourArea(h) for h in holes)
        if area > 0 and area > min_area:
            holes = sorted(holes, key=cv2.contourArea, reverse=True)[:8]
            holes = [h for h in holes if cv2.contourArea(h) > min_hole]
            kept.append((contours[i], holes))
    shift = FOOTPRINT // 2 // 2  # center_shift 0.5
    half = FOOTPRINT // 2
    coords = []
    for contour, holes in kept:
        contour = (contour * scale).astype(np.int32)
        holes = [(h * scale).astype(np.int32) for h in holes]
        x0, y0, w, h = cv2.boundingRect(contour)
        for x in range(x0, x0 + w, FOOTPRINT):
            for y in range(y0, y0 + h, FOOTPRINT):
                cx, cy = x + half, y + half
                corners = ((cx - shift, cy - shift), (cx + shift, cy + shift),
                           (cx + shift, cy - shift), (cx - shift, cy + shift))  # fmt: skip
                if not any(
                    cv2.pointPolygonTest(contour, (float(px), float(py)), False) >= 0
                    for px, py in corners
                ):
                    continue
                centre = (float(cx), float(cy))
                if any(cv2.pointPolygonTest(hole, centre, False) > 0 for hole in holes):
                    continue
                coords.append((x, y))
    return np.array(coords, np.int64).reshape(-1, 2)


# --------------------------------------------------------------------------- agreement
def agreement(slide: LargeSlide, coords: np.ndarray, min_tissue: float) -> dict[str, float]:
    truth = slide.truth
    integral = integral_image(truth)
    h, w = truth.shape
    got = tissue_fraction(integral, CELL, coords, FOOTPRINT)
    gx, gy = np.meshgrid(np.arange(0, w * CELL, FOOTPRINT), np.arange(0, h * CELL, FOOTPRINT))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    ideal = grid[tissue_fraction(integral, CELL, grid, FOOTPRINT) >= min_tissue]

    def covered(tiles: np.ndarray) -> float:
        under = np.zeros_like(truth)
        side = FOOTPRINT // CELL
        for x, y in tiles // CELL:
            under[y : y + side, x : x + side] = True
        return float((under & truth).sum())

    ideal_set, kept_set = set(map(tuple, ideal.tolist())), set(map(tuple, coords.tolist()))
    return {
        "tiles": len(coords),
        "duplicates": len(coords) - len(kept_set),
        "precision": float((got >= min_tissue).mean()) if len(got) else 0.0,
        "empty": float((got < 0.05).mean()) if len(got) else 0.0,
        "recall": covered(coords) / max(covered(ideal), 1.0),
        "iou": len(kept_set & ideal_set) / max(len(kept_set | ideal_set), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--folder", type=Path, help="keep the slides here (default: a temp dir)")
    parser.add_argument("--width", type=int, default=40_000, help="level-0 px (x40)")
    parser.add_argument("--height", type=int, default=40_000, help="level-0 px (x40)")
    parser.add_argument("--pyramid", type=int, default=4, help="downsample between levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs of each side")
    parser.add_argument("--min-tissue", type=float, default=0.25)
    parser.add_argument("--target-mpp", type=float, help="wsi.segment.target_mpp (default: ours)")
    parser.add_argument("--clam-otsu", action="store_true", help="CLAM's use_otsu=True")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    segment = {} if args.target_mpp is None else {"target_mpp": args.target_mpp}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        started = time.perf_counter()
        slides = large_slides(
            folder, args.slides, args.seed, width=args.width, height=args.height,
            pyramid=args.pyramid,
        )  # fmt: skip
        print(
            f"slides: {len(slides)} of {args.width}x{args.height} px at 0.25 um/px, levels "
            f"{slides[0].downsamples}, ready in {time.perf_counter() - started:.1f} s"
        )
        sides = {
            "clam": lambda p: clam_tiles(p, args.clam_otsu),
            "wsi": lambda p: wsi_tiles(p, args.min_tissue, segment),
        }
        # the sides alternate within each repeat, so that load on a shared machine falls on
        # both alike; the first repeat also warms the page cache for both
        runs: dict[str, list[float]] = {name: [] for name in sides}
        tiles: dict[str, list[np.ndarray]] = {}
        for _ in range(args.repeats):
            for name, run in sides.items():
                started = time.perf_counter()
                tiles[name] = [run(s.path) for s in slides]
                runs[name].append((time.perf_counter() - started) / len(slides))
        scores = {
            name: [agreement(s, t, args.min_tissue) for s, t in zip(slides, got, strict=True)]
            for name, got in tiles.items()
        }
        median = {name: float(np.median(r)) for name, r in runs.items()}
        best = {name: float(np.min(r)) for name, r in runs.items()}
        for name in sides:
            mean = {k: float(np.mean([s[k] for s in scores[name]])) for k in scores[name][0]}
            print(
                f"{name:>5}: {median[name]:.4f} s/slide (best {best[name]:.4f})"
                f"  x20 tiles {mean['tiles']:.0f} (dup {mean['duplicates']:.0f})"
                f"  precision {mean['precision']:.3f}  empty {mean['empty']:.3f}"
                f"  recall {mean['recall']:.3f}  iou {mean['iou']:.3f}"
            )
        print(
            f"ratio: wsi is {median['clam'] / median['wsi']:.2f}x as fast as clam end to end"
            f" (median of {args.repeats}; best {best['clam'] / best['wsi']:.2f}x; target >= 2x)"
        )


if __name__ == "__main__":
    main()
