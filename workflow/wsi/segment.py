"""Tissue mask of a slide at low resolution: HSV saturation, Otsu, closing, area filter.

H&E tissue is saturated (pink/purple) while glass is grey-white, so saturation separates them
regardless of stain intensity. The mask is computed at ~8 um/px (CLAM segments at a similar
level): fine enough to drop background from 256-px x20 tiles (128 um), small enough to hold
in memory for a whole Camelyon16 slide.
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
from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.wsi.slide import Slide

log = logging.getLogger("lsai.wsi.segment")

BAND_PIXELS = 1 << 24  # pixels per read_region call when a whole level is read in bands


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
    """(level, integer block factor) giving about ``target_mpp`` um per mask pixel.

    The level nearest to the target (in log scale) is read; if it is still much finer (few
    pyramid levels), it is block-averaged by an integer factor instead of reading level 0.
    """
    mpps = [slide.level_mpp(k) for k in range(slide.level_count)]
    level = int(np.argmin([abs(math.log(m / target_mpp)) for m in mpps]))
    factor = max(1, round(target_mpp / mpps[level]))
    return level, factor


def read_level(slide: Slide, level: int, factor: int = 1) -> np.ndarray:
    """A whole level as RGB uint8, block-averaged by ``factor``, read in bands of rows so a
    slide with few levels never needs its full-resolution image in memory."""
    width, height = slide.level_dimensions[level]
    out_w, out_h = max(1, width // factor), max(1, height // factor)
    scale = slide.level_downsamples[level]
    band = max(factor, (BAND_PIXELS // max(width, 1)) // factor * factor)
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
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0).astype(np.float32)


def segment_tissue(
    slide: Slide,
    target_mpp: float = 8.0,
    min_saturation: float = 0.05,
    close_um: float = 32.0,
    min_area_um2: float = 20_000.0,
    max_hole_um2: float = 20_000.0,
) -> TissueMask:
    """Tissue mask of ``slide``; raises InputError when the slide shows no tissue.

    ``min_saturation`` guards Otsu: on a blank slide Otsu still splits the glass's noise in
    two, so unless some pixels reach this saturation there is no tissue at all; and when the
    darker-than-Otsu class is itself saturated (tissue everywhere), this floor is the threshold.
    """
    level, factor = mask_source(slide, target_mpp)
    rgb = read_level(slide, level, factor)
    downsample = slide.level_downsamples[level] * factor
    mpp = slide.mpp * downsample
    sat = ndimage.median_filter(saturation(rgb), size=3)
    if sat.size < 4 or float(np.percentile(sat, 99.5)) < min_saturation:
        raise InputError(
            slide.path,
            f"no tissue found (saturation never reaches {min_saturation:g}; blank slide?)",
        )
    threshold = float(threshold_otsu(sat))
    below = sat[sat <= threshold]
    if below.size == 0 or float(below.mean()) >= min_saturation:
        threshold = min_saturation
    threshold = max(threshold, min_saturation / 2)
    mask = sat > threshold
    radius = max(1, round(close_um / mpp))
    mask = closing(mask, disk(radius))
    mask = remove_small_holes(mask, max_size=max(1, int(max_hole_um2 / mpp**2)))
    mask = remove_small_objects(mask, max_size=max(1, int(min_area_um2 / mpp**2)))
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
