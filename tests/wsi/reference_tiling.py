"""The per-tile tiling that the library's mask + integral-image tiling replaces: every tile of
the finest grid is read and its saturation tested. The test oracle of tests/wsi/
test_wsi_tiling.py and the slow side of tests/benchmarks/tiling_benchmark.py."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from workflow.wsi.segment import saturation
from workflow.wsi.slide import Slide


def naive_tiling(
    slide: Slide,
    magnification: float = 20.0,
    patch_size: int = 256,
    min_tissue: float = 0.25,
    saturation_threshold: float = 0.08,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: read every tile of the finest grid and test its saturation.

    Returns (coords (N, 2) int64, tissue fraction (N,) float32) of the kept tiles.
    """
    read = slide.scale(magnification, patch_size)
    width, height = slide.dimensions
    positions = [
        (x, y) for y in range(0, height, read.footprint) for x in range(0, width, read.footprint)
    ]
    kept, fractions = [], []
    for x, y in tqdm(positions, desc=f"naive {slide.path.name}", mininterval=5, leave=False):
        tile = slide.read_rgb((x, y), read.level, (read.read_size, read.read_size))
        fraction = float((saturation(tile) > saturation_threshold).mean())
        if fraction >= min_tissue:
            kept.append((x, y))
            fractions.append(fraction)
    return np.array(kept, np.int64).reshape(-1, 2), np.array(fractions, np.float32)
