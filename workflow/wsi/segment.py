"""Tissue mask of a slide at low resolution: HSV saturation, Otsu, closing, area filter.

H&E tissue is saturated (pink/purple) while glass is grey-white, so saturation separates them
regardless of stain intensity. The mask is computed at ~16 um/px, the level CLAM segments at
(downsample 64 of a x40 scan): a 256-px x20 tile (128 um) spans 8 x 8 mask pixels, and the
tissue fraction of a tile is read from the mask with sub-pixel footprints. On large synthetic
slides with a known truth the x20 tile sets from a 16 um mask are nearly those from an 8 um one
(tests/benchmarks/segment_benchmark.py), while pyramids with levels 4x apart (1, 4, 16, 64)
have no 8 um level: reading the 4 um one and averaging it down read 16x the pixels and made
the mask most of the tiling stage's time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from os import PathLike

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.wsi.slide import Slide

log = logging.getLogger("lsai.wsi.segment")

BAND_PIXELS = 1 << 24  # pixels per read_region call when a whole level is read in bands
# A mask level up to 25% coarser than target_mpp is read as it is (see mask_source).
MASK_TOLERANCE = 0.25
# A border pixel's tissue saturation is the most saturated pixel within this distance (um).
BORDER_UM = 48.0


@dataclass(frozen=True)
class TissueMask:
    """``mask[i, j]`` covers level-0 pixels ``[j, j + 1) x [i, i + 1)`` times ``downsample``."""

    mask: np.ndarray  # bool (h, w)
    downsample: float  # level-0 px per mask px
    thumbnail: np.ndarray  # (h, w, 3) uint8, the image the mask was computed on
    level: int  # OpenSlide level that was read
    threshold: float  # saturation threshold used

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())


def mask_source(slide: Slide, target_mpp: float) -> tuple[int, int]:
    """(level, integer block factor) giving about ``target_mpp`` um per mask pixel while
    reading the fewest pixels.

    The coarsest level no coarser than ``target_mpp`` (up to ``MASK_TOLERANCE`` above it:
    scanners' 0.2527 um/px make downsample 64 a 16.2 um level) is read as it is. Only when that
    level is about twice finer than the target or more (a pyramid with few levels) is it
    block-averaged, by the integer factor nearest the target within that tolerance.
    """
    needed = target_mpp / slide.mpp  # level-0 px per mask px
    limit = needed * (1 + MASK_TOLERANCE)
    downsamples = slide.level_downsamples
    fine_enough = [k for k, d in enumerate(downsamples) if d <= limit]
    if not fine_enough:  # even level 0 is coarser than the target
        return int(np.argmin(downsamples)), 1
    level = max(fine_enough, key=lambda k: downsamples[k])
    ratio = needed / downsamples[level]
    return level, max(1, min(round(ratio), math.floor(ratio * (1 + MASK_TOLERANCE))))


def read_level(slide: Slide, level: int, factor: int = 1) -> np.ndarray:
    """A whole level as RGB uint8, block-averaged by ``factor``, read in bands of rows so a
    slide with few levels never needs its full-resolution image in memory."""
    width, height = slide.level_dimensions[level]
    out_w, out_h = max(1, width // factor), max(1, height // factor)
    scale = slide.level_downsamples[level]
    band = max(factor, (BAND_PIXELS // max(width, 1)) // factor * factor)
    if factor == 1 and band >= height:  # one read: no copy into an output array
        return slide.read_rgb((0, 0), level, (width, height))
    out = np.empty((out_h, out_w, 3), np.uint8)
    for y in range(0, out_h * factor, band):
        rows = min(band, out_h * factor - y)
        rgb = slide.read_rgb((0, round(y * scale)), level, (out_w * factor, rows))
        if factor > 1:
            blocks = rgb.reshape(rows // factor, factor, out_w, factor, 3).mean(axis=(1, 3))
            rgb = (blocks + 0.5).astype(np.uint8)
        out[y // factor : (y + rows) // factor] = rgb
    return out


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (max - min) / max in [0, 1], as skimage.color.rgb2hsv computes it."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(r, g), b).astype(np.float32)
    low = np.minimum(np.minimum(r, g), b).astype(np.float32)
    return ((high - low) / np.maximum(high, 1e-6)).astype(np.float32, copy=False)


SATURATION_STEPS = 65535  # saturation16's unit: 1 / 65535


def saturation16(rgb: np.ndarray) -> np.ndarray:
    """``saturation(rgb)`` rounded to uint16 steps of 1/65535 (an error under 1e-5): the 3 x 3
    median of uint16 runs ten times faster than of float32, and it was a quarter of the mask's
    time."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(r, g), b)
    spread = (high - np.minimum(np.minimum(r, g), b)).astype(np.float32)
    spread *= np.float32(SATURATION_STEPS)
    spread /= np.maximum(high, 1)  # a black pixel has no spread: 0 / 1
    spread += np.float32(0.5)
    return spread.astype(np.uint16)


def _sort2(a: np.ndarray, b: np.ndarray) -> None:
    """Compare-exchange in place: ``a`` gets the smaller, ``b`` the larger of each pair."""
    low = np.minimum(a, b)
    np.maximum(a, b, out=b)
    a[...] = low


def _median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def median3(image: np.ndarray) -> np.ndarray:
    """3 x 3 median filter, edges mirrored: ``scipy.ndimage.median_filter(image, size=3)``
    with its default mode, several times faster. Each column's vertical triples are sorted
    once; the median of the 9 is then the median of (the largest of the 3 lows, the median of
    the 3 middles, the smallest of the 3 highs) of the window's 3 columns (Paeth, Graphics
    Gems 1990)."""
    h, w = image.shape
    padded = np.pad(image, 1, mode="symmetric")
    low, mid, high = padded[:h].copy(), padded[1 : h + 1].copy(), padded[2:].copy()
    _sort2(low, mid)
    _sort2(mid, high)
    _sort2(low, mid)
    lows = np.maximum(np.maximum(low[:, :w], low[:, 1 : w + 1]), low[:, 2:])
    highs = np.minimum(np.minimum(high[:, :w], high[:, 1 : w + 1]), high[:, 2:])
    mids = _median3(mid[:, :w], mid[:, 1 : w + 1], mid[:, 2:])
    return _median3(lows, mids, highs)


def otsu(values: np.ndarray, counts: np.ndarray | None = None, bins: int = 256) -> float:
    """``skimage.filters.threshold_otsu(values)`` on float data: the same 256 bins over
    [min, max], counted by one bincount instead of np.histogram (a few times faster).
    ``counts`` makes ``values`` a histogram: each value occurs that many times."""
    low, high = float(values.min()), float(values.max())
    if low == high:
        return low
    scale = bins / (high - low)
    index = ((values.ravel() - np.float32(low)) * np.float32(scale)).astype(np.intp)
    hist = np.bincount(
        np.minimum(index, bins - 1, out=index),
        None if counts is None else counts.ravel(),
        minlength=bins,
    )
    edges = np.linspace(low, high, bins + 1, dtype=np.result_type(values.dtype, np.float32))
    return float(threshold_otsu(hist=(hist, (edges[:-1] + edges[1:]) / 2)))


def _shifted(image: np.ndarray, offsets: list[tuple[int, int]], pad: int, op, mode: str):
    """``op`` over ``image`` shifted by each (dy, dx) in ``offsets``, edges padded by ``mode``."""
    h, w = image.shape
    padded = np.pad(image, pad, mode=mode)  # type: ignore[call-overload]
    out = padded[pad + offsets[0][0] : pad + offsets[0][0] + h,
                 pad + offsets[0][1] : pad + offsets[0][1] + w].copy()  # fmt: skip
    for dy, dx in offsets[1:]:
        op(out, padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w], out=out)
    return out


def binary_closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """``skimage.morphology.closing(mask, disk(radius))`` (edges mirrored) by shifted ORs and
    ANDs of whole arrays: a few times faster on a mask of a few hundred pixels a side."""
    footprint = disk(radius)
    offsets = [(int(y) - radius, int(x) - radius) for y, x in np.argwhere(footprint)]
    dilated = _shifted(mask, offsets, radius, np.logical_or, "symmetric")
    return _shifted(dilated, offsets, radius, np.logical_and, "symmetric")


def _box(image: np.ndarray, size: int, op) -> np.ndarray:
    """``op`` (np.maximum, np.minimum) over a ``size`` x ``size`` window centred on each
    pixel, edges repeated: separable, each axis by doubling windows."""
    half = size // 2
    out = image
    for axis in (0, 1):
        padded = np.pad(out, [(half, half) if a == axis else (0, 0) for a in (0, 1)], "edge")
        width, run = 1, padded
        while width < size:  # run[i] = op(padded[i : i + width]), width -> min(2 width, size)
            step = min(width, size - width)
            n = run.shape[axis] - step
            head = run[:n] if axis == 0 else run[:, :n]
            tail = run[step : step + n] if axis == 0 else run[:, step : step + n]
            run, width = op(head, tail), width + step
        out = run
    return out


def _small_components(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Pixels of ``mask``'s 4-connected components of at most ``max_size`` pixels: what
    ``skimage.morphology.remove_small_objects(mask, max_size=max_size)`` removes."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask)
    small = np.bincount(labels.ravel(), minlength=count + 1) <= max_size
    small[0] = False
    return small[labels]


def segment_tissue(
    slide: Slide,
    target_mpp: float = 16.0,
    min_saturation: float = 0.05,
    close_um: float = 32.0,
    min_area_um2: float = 20_000.0,
    max_hole_um2: float = 20_000.0,
) -> TissueMask:
    """Tissue mask of ``slide``; raises InputError when the slide shows no tissue.

    ``min_saturation`` guards Otsu: on a blank slide Otsu still splits the glass's noise in
    two, so unless some pixels reach this saturation there is no tissue at all; and when the
    darker-than-Otsu class is itself saturated (tissue everywhere), this floor is the threshold.

    Otsu's threshold only seeds the tissue (hysteresis): pale tissue (stroma, fat borders,
    saturation ~0.1, under Otsu's threshold on a slide of pink and purple) is kept where it
    reaches ``min_saturation`` and touches a seed. A pixel at the tissue's border (next to one
    under ``min_saturation``) mixes tissue and glass; it is tissue when its saturation is at
    least half way from the glass's (Otsu's darker class) to the tissue's nearby (the most
    saturated pixel within ``BORDER_UM``), i.e. when it is about half tissue.
    """
    level, factor = mask_source(slide, target_mpp)
    rgb = read_level(slide, level, factor)
    downsample = slide.level_downsamples[level] * factor
    mpp = slide.mpp * downsample
    steps = median3(saturation16(rgb))
    sat = steps.astype(np.float32)
    sat /= np.float32(SATURATION_STEPS)
    # the 99.5th percentile reaches min_saturation
    if sat.size < 4 or np.count_nonzero(sat >= min_saturation) < 0.005 * sat.size:
        raise InputError(
            slide.path,
            f"no tissue found (saturation never reaches {min_saturation:g}; blank slide?)",
        )
    counts = np.bincount(steps.ravel())  # Otsu on the histogram: a fifth of the pixels' time
    present = np.flatnonzero(counts)
    threshold = otsu(present.astype(np.float32) / np.float32(SATURATION_STEPS), counts[present])
    below = sat[sat <= threshold]
    glass = float(below.mean()) if below.size else 0.0
    if below.size == 0 or glass >= min_saturation:
        threshold = min_saturation
    threshold = max(threshold, min_saturation / 2)
    glass = min(glass, threshold)
    weak = sat > min(min_saturation, threshold)
    labels, count = ndimage.label(weak)
    seeded = np.zeros(count + 1, bool)
    seeded[labels[sat > threshold]] = True
    seeded[0] = False
    mask = seeded[labels]
    border = mask & ~_box(weak, 3, np.logical_and)
    nearby = _box(steps, 2 * round(BORDER_UM / mpp) + 1, np.maximum)[border]
    nearby = nearby.astype(np.float32) / np.float32(SATURATION_STEPS)
    mask[border] = sat[border] - glass >= 0.5 * (nearby - glass)
    radius = max(1, round(close_um / mpp))
    mask = binary_closing(mask, radius)
    mask[_small_components(~mask, max(1, int(max_hole_um2 / mpp**2)))] = True
    mask[_small_components(mask, max(1, int(min_area_um2 / mpp**2)))] = False
    if not mask.any():
        raise InputError(
            slide.path, f"no tissue found (no saturated region larger than {min_area_um2:g} um2)"
        )
    log.info(
        "%s: tissue %.1f%% of a %dx%d mask (level %d / %d, %.2f um/px, threshold %.3f)",
        slide.path.name,
        100 * mask.mean(),
        mask.shape[1],
        mask.shape[0],
        level,
        factor,
        mpp,
        threshold,
    )
    return TissueMask(mask, float(downsample), rgb, level, threshold)


def write_pngs(
    tissue: TissueMask,
    thumbnail_png: str | PathLike[str],
    mask_png: str | PathLike[str],
) -> None:
    """The thumbnail and the mask (white = tissue) for the report, each written atomically."""
    with atomic_path(thumbnail_png) as tmp:
        Image.fromarray(tissue.thumbnail).save(tmp, format="PNG")
    with atomic_path(mask_png) as tmp:
        Image.fromarray(tissue.mask.astype(np.uint8) * 255).save(tmp, format="PNG")
