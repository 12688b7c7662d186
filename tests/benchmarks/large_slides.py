"""Large synthetic slides with a known tissue mask, written as real tiled pyramidal TIFFs.

The demo writer (workflow/wsi/demo.py) holds every level in memory, which a 40k x 40k slide
(4.8 GB of RGB) does not allow. Here the slide is drawn once at 2 um/px (``CELL`` level-0 px
per truth cell): a binary tissue mask (islands with ragged borders, holes, thin strands, small
fragments) and its colours. Levels finer than a cell are written tile by tile from that field
(nearest upsampling plus zero-mean grain), coarser ones as block means of it, as a scanner's
pyramid would be. The truth at level 0 is the mask upsampled by ``CELL``: a level-0 pixel is
tissue exactly when its cell is, so tissue fractions of any level-0 square are exact
(``workflow.wsi.tiling.tissue_fraction`` on the mask with downsample ``CELL``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

CELL = 8  # level-0 px per truth cell (2 um at 0.25 um/px)
TILE = 256
GLASS = np.array([244.0, 243.0, 246.0])
PINK = np.array([225.0, 158.0, 198.0])
PURPLE = np.array([128.0, 78.0, 168.0])
PALE = np.array([236.0, 212.0, 228.0])  # pale stroma, fat borders: saturation ~0.1


@dataclass(frozen=True)
class LargeSlide:
    path: Path
    truth: np.ndarray  # bool (height / CELL, width / CELL)
    mpp: float
    downsamples: tuple[int, ...]


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


def _zoom(field: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return ndimage.zoom(
        field, (shape[0] / field.shape[0], shape[1] / field.shape[1]), order=1, grid_mode=True,
        mode="nearest",
    )  # fmt: skip


def draw_truth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Tissue cells (2 um): a few islands with ragged borders, holes, strands and fragments."""
    coarse = (max(h // 16, 8), max(w // 16, 8))  # 32 um
    yy, xx = np.mgrid[0 : coarse[0], 0 : coarse[1]].astype(np.float32)
    inside = np.full(coarse, -np.inf, np.float32)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0.2, 0.8) * coarse[0], rng.uniform(0.2, 0.8) * coarse[1]
        ry, rx = rng.uniform(0.1, 0.25) * coarse[0], rng.uniform(0.08, 0.2) * coarse[1]
        a = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        inside = np.maximum(inside, 1 - np.sqrt((u / rx) ** 2 + (v / ry) ** 2))
    field = _zoom(inside + 0.25 * _noise(rng, coarse, 3), (h, w))
    field += 0.06 * _noise(rng, (h, w), 12)  # ragged at the 25-100 um scale
    truth = field > 0
    yy, xx = np.ogrid[0:h, 0:w]
    scale = h / 5000  # sizes below are in cells of a 40k slide (2 um each)
    for _ in range(int(rng.integers(20, 40))):  # holes: fat, vessels, tears (60-500 um)
        ys, xs = np.nonzero(truth[::50, ::50])
        if not len(ys):
            break
        k = rng.integers(len(ys))
        r = rng.uniform(15, 125) * max(scale, 0.2)
        truth &= (yy - ys[k] * 50) ** 2 + (xx - xs[k] * 50) ** 2 > r * r
    for _ in range(int(rng.integers(3, 7))):  # strands: 40-150 um wide curves
        t = np.linspace(0, 1, 400)
        y0, x0 = rng.uniform(0.1, 0.9, 2) * (h, w)
        dy, dx = rng.uniform(-0.4, 0.4, 2) * (h, w)
        bend = rng.uniform(-0.15, 0.15) * h
        ys = np.clip(y0 + dy * t + bend * np.sin(np.pi * t), 0, h - 1).astype(int)
        xs = np.clip(x0 + dx * t, 0, w - 1).astype(int)
        line = np.zeros((h, w), bool)
        line[ys, xs] = True
        width = rng.uniform(20, 75) * max(scale, 0.2)
        truth |= ndimage.distance_transform_edt(~line) < width / 2
    for _ in range(int(rng.integers(15, 35))):  # fragments: 80-700 um blobs
        cy, cx = rng.uniform(0.05, 0.95, 2) * (h, w)
        r = rng.uniform(20, 175) * max(scale, 0.2)
        truth |= ((yy - cy) / r) ** 2 + ((xx - cx) / (r * rng.uniform(0.5, 1.5))) ** 2 < 1
    return truth


def colour_field(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 colours of the cells: glass, or a pink / purple / pale tissue mix."""
    h, w = truth.shape
    low = (max(h // 32, 8), max(w // 32, 8))
    haem = np.clip(0.25 + 0.2 * _zoom(_noise(rng, low, 2), (h, w)), 0, 0.8)[..., None]
    pale = np.clip(_zoom(_noise(rng, low, 3), (h, w)) - 1.0, 0, 1)[..., None]  # ~16% of tissue
    tissue = (PINK * (1 - haem) + PURPLE * haem) * (1 - pale) + PALE * pale
    rgb = np.where(truth[..., None], tissue, GLASS).astype(np.float32)
    rgb += rng.normal(0, 3, rgb.shape).astype(np.float32)
    return rgb


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).mean(axis=(1, 3))


def _tiles(field: np.ndarray, ds: int, shape: tuple[int, int], grain: np.ndarray) -> Iterator:
    """Tiles of a level finer than a cell: cells upsampled by CELL / ds, plus grain."""
    up = CELL // ds
    cells = TILE // up
    for ty in range(0, shape[0], TILE):
        for tx in range(0, shape[1], TILE):
            block = field[ty // up : ty // up + cells, tx // up : tx // up + cells]
            tile = np.full((TILE, TILE, 3), 255.0, np.float32)
            big = np.repeat(np.repeat(block, up, axis=0), up, axis=1)
            tile[: big.shape[0], : big.shape[1]] = big
            oy, ox = (ty * 7 + tx * 3) % 256, (tx * 5 + ty) % 256
            tile += grain[oy : oy + TILE, ox : ox + TILE]
            yield np.clip(tile, 0, 255).astype(np.uint8)


def write_large_slide(
    path: Path,
    seed: int,
    width: int = 40_000,
    height: int = 40_000,
    mpp: float = 0.25,
    pyramid: int = 4,
    coarsest: int = 128,
) -> LargeSlide:
    """A JPEG-tiled pyramidal TIFF of ``width`` x ``height`` px at ``mpp`` with levels at
    downsamples 1, pyramid, pyramid^2, ... while the level has ``coarsest`` px or more."""
    rng = np.random.default_rng(seed)
    truth = draw_truth(rng, height // CELL, width // CELL)
    field = colour_field(rng, truth)
    grain = rng.normal(0, 6, (2 * TILE, 2 * TILE, 3)).astype(np.float32)
    downsamples = [1]
    while min(width, height) // (downsamples[-1] * pyramid) >= coarsest:
        downsamples.append(downsamples[-1] * pyramid)
    tmp = path.with_suffix(".part")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, ds in enumerate(downsamples):
            shape = (height // ds, width // ds)
            if ds < CELL:
                data = _tiles(field, ds, shape, grain)
                extra = {"shape": (*shape, 3), "dtype": np.uint8}
            else:
                data = np.clip(_block_mean(field, ds // CELL) + 0.5, 0, 255).astype(np.uint8)
                data = data[: shape[0], : shape[1]]
                extra = {}
            tif.write(
                data,
                photometric="rgb",
                tile=(TILE, TILE),
                compression="jpeg",
                compressionargs={"level": 85},
                subfiletype=int(k > 0),
                resolution=(1e4 / (mpp * ds),) * 2,
                resolutionunit="CENTIMETER",
                metadata=None,
                **extra,
            )
    tmp.rename(path)
    return LargeSlide(path, truth, mpp, tuple(downsamples))


def large_slides(
    folder: Path, count: int, seed: int = 0, **kwargs: int | float
) -> list[LargeSlide]:
    """``count`` slides in ``folder``, reusing files already there (their truth is redrawn
    from the seed, which is cheap next to the TIFF)."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = "_".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    out = []
    for i in range(count):
        path = folder / f"large_{seed + i}{'_' + tag if tag else ''}.tif"
        if path.exists():
            rng = np.random.default_rng(seed + i)
            width, height = int(kwargs.get("width", 40_000)), int(kwargs.get("height", 40_000))
            truth = draw_truth(rng, height // CELL, width // CELL)
            pyramid, coarsest = int(kwargs.get("pyramid", 4)), int(kwargs.get("coarsest", 128))
            downsamples = [1]
            while min(width, height) // (downsamples[-1] * pyramid) >= coarsest:
                downsamples.append(downsamples[-1] * pyramid)
            out.append(LargeSlide(path, truth, float(kwargs.get("mpp", 0.25)), tuple(downsamples)))
        else:
            out.append(write_large_slide(path, seed + i, **kwargs))  # type: ignore[arg-type]
    return out
