"""One synthetic slide drawn at level 0: tissue islands, nuclei, lesions and the planted
tumour texture (what they are and why: workflow/wsi/demo.py).

Kept apart from the files the demo writes (pyramid, TIFF, labels, manifest), which only
receive the drawn slide. ``render_slide`` draws from its generator in a fixed order, which
keeps the demo byte-identical for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from workflow.wsi.demo import DemoSettings

LOW = 16  # level-0 px per cell of the low-resolution layout (tissue, colour, blobs)
PINK = (225.0, 158.0, 198.0)  # eosin-stained stroma
PURPLE = (128.0, 78.0, 168.0)  # haematoxylin-rich tissue
NUCLEUS = (88.0, 48.0, 128.0)
BACKGROUND = (244.0, 243.0, 246.0)
TUMOR_DOT = (-70.0, -85.0, -45.0)  # darkening of a tumour dot's pixels


# --------------------------------------------------------------------------- layout
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance, spatially smooth noise."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


def _layout(rng: np.random.Generator, s: DemoSettings) -> dict[str, np.ndarray]:
    """Low-resolution fields: tissue (soft 0-1), haematoxylin fraction, eosin intensity."""
    h, w = s.height // LOW, s.width // LOW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = np.full((h, w), -np.inf, np.float32)
    for _ in range(int(rng.integers(s.islands[0], s.islands[1] + 1))):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.15, 0.85) * w
        ry, rx = rng.uniform(0.18, 0.32) * h, rng.uniform(0.12, 0.24) * w
        angle = rng.uniform(0, np.pi)
        c, si = np.cos(angle), np.sin(angle)
        u, v = (xx - cx) * c + (yy - cy) * si, -(xx - cx) * si + (yy - cy) * c
        inside = np.maximum(inside, 1 - np.sqrt((u / rx) ** 2 + (v / ry) ** 2))
    hard = inside + 0.12 * _smooth_noise(rng, (h, w), 4) > 0
    hard = ndimage.binary_opening(hard, iterations=2)
    tissue = ndimage.gaussian_filter(hard.astype(np.float32), 0.8)
    haem = 0.18 + 0.06 * _smooth_noise(rng, (h, w), 6)
    for _ in range(int(rng.integers(2, 6))):  # purple blobs (lymphoid aggregates), both classes
        by, bx = rng.uniform(0, h), rng.uniform(0, w)
        sigma = rng.uniform(4, 10)
        haem += 0.45 * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * sigma**2))
    eosin = 1 + 0.04 * _smooth_noise(rng, (h, w), 3)
    return {"tissue": tissue, "hard": hard, "haem": np.clip(haem, 0.05, 0.7), "eosin": eosin}


def _discs(
    rng: np.random.Generator, hard: np.ndarray, radii: Sequence[int], gap: int
) -> list[tuple[int, int, int]]:
    """(cx, cy, r) level-0 discs inside tissue, in the order of ``radii``, each ``gap`` px
    from the others' edges; where the tissue has no room, half the gap, then touching, then
    anywhere inside tissue (a disc that fits nowhere shrinks to the deepest point)."""
    depth = ndimage.distance_transform_edt(hard) * LOW
    yy, xx = (np.mgrid[0 : hard.shape[0], 0 : hard.shape[1]] + 0.5) * LOW
    discs: list[tuple[int, int, int]] = []
    for radius in radii:
        fits = depth >= radius + 2 * LOW
        if not fits.any():
            fits = depth == depth.max()
            radius = max(LOW, int(depth.max()) - LOW)
        for spacing in (gap, gap / 2, 0, None):
            free = fits.copy()
            for cx, cy, r in discs if spacing is not None else []:
                free &= (xx - cx) ** 2 + (yy - cy) ** 2 >= (radius + r + spacing) ** 2
            if free.any():
                break
        ys, xs = np.nonzero(free)
        pick = int(rng.integers(ys.size))
        discs.append((int(xs[pick] * LOW + LOW // 2), int(ys[pick] * LOW + LOW // 2), radius))
    return discs


def _lesions(
    rng: np.random.Generator, hard: np.ndarray, s: DemoSettings, tumor: bool
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """(metastases, mimics): every slide draws ``mimics`` look-alike foci; a tumour slide
    gives ``mimics_per_metastasis`` of them up for its one metastasis, so the textured area
    of the two classes stays comparable (about 1.5 : 1)."""
    count = int(rng.integers(s.mimics[0], s.mimics[1] + 1))
    big = [int(rng.integers(s.tumor_radius[0], s.tumor_radius[1] + 1))] if tumor else []
    small = max(count - s.mimics_per_metastasis * len(big), 0)
    radii = big + [
        int(rng.integers(s.mimic_radius[0], s.mimic_radius[1] + 1)) for _ in range(small)
    ]
    discs = _discs(rng, hard, radii, s.lesion_gap)
    return discs[: len(big)], discs[len(big) :]


def _interp(n_out: int, n_in: int, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (lo, hi, weight of hi) mapping ``cell``-sized cell centres to pixel centres."""
    pos = np.clip((np.arange(n_out) + 0.5) / cell - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)


def _cells(values: np.ndarray, y0: int, rows: int, width: int, cell: int) -> np.ndarray:
    """Per-cell ``values`` expanded to pixel rows ``y0 .. y0 + rows`` (``y0 % cell == 0``)."""
    block = values[y0 // cell : -(-(y0 + rows) // cell)]
    return np.repeat(np.repeat(block, cell, 0)[:rows], cell, 1)[:, :width]


def _lattice(
    y0: int, rows: int, width: int, cell: int, offset: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Boolean dots: one per ``cell`` x ``cell`` block at ``offset`` within it, of ``radius``."""
    dy = (np.arange(rows, dtype=np.float32) % cell)[:, None] + 0.5
    dx = (np.arange(width, dtype=np.float32) % cell)[None, :] + 0.5
    dy = dy - _cells(offset[0], y0, rows, width, cell)
    dx = dx - _cells(offset[1], y0, rows, width, cell)
    return dy * dy + dx * dx <= _cells(radius * radius, y0, rows, width, cell)


# --------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # level-0 RGB (H, W, 3) uint8
    regions: list[tuple[int, int, int]]  # metastases (cx, cy, r), level-0 px
    mimics: list[tuple[int, int, int]]  # look-alike foci, the same texture
    tissue: np.ndarray  # bool layout, one cell per LOW x LOW level-0 px


def render_slide(
    rng: np.random.Generator, s: DemoSettings, tumor: bool, plant: bool = True
) -> Rendered:
    """One slide at level 0. ``plant=False`` draws the same slide (same random stream, same
    tumour discs) without the tumour texture: the pair shows what the texture changes."""
    lay = _layout(rng, s)
    regions, mimics = _lesions(rng, lay["hard"], s, tumor)
    # bilinear upsampling, separable: columns now for the whole slide, rows strip by strip
    y_lo, y_hi, y_w = _interp(s.height, s.height // LOW, LOW)
    x_lo, x_hi, x_w = _interp(s.width, s.width // LOW, LOW)
    wide = {
        k: lay[k][:, x_lo] * (1 - x_w) + lay[k][:, x_hi] * x_w for k in ("tissue", "haem", "eosin")
    }
    # normal nuclei: sparse lattice, 24 px cells, radius 3-5 px, present in half the cells
    nc = 24
    nh, nw = -(-s.height // nc), -(-s.width // nc)
    n_radius = rng.uniform(3.0, 5.0, (nh, nw)).astype(np.float32)
    n_radius[rng.uniform(size=(nh, nw)) > 0.5] = 0
    n_offset = rng.uniform(6, nc - 6, (2, nh, nw)).astype(np.float32)
    # tumour texture: one small dot per tumour_cell block, zero mean per block
    tc = s.tumor_cell
    th, tw = s.height // tc, s.width // tc
    t_offset = rng.uniform(2.0, tc - 2.0, (2, th, tw)).astype(np.float32)
    t_radius = np.full((th, tw), 1.6, np.float32)
    centres_y, centres_x = np.mgrid[0:th, 0:tw] * tc + tc / 2
    in_tumor = np.zeros((th, tw), bool)
    for cx, cy, r in regions + mimics if plant else []:
        in_tumor |= (centres_x - cx) ** 2 + (centres_y - cy) ** 2 <= r * r
    image = np.empty((s.height, s.width, 3), np.uint8)
    strip = 48 * tc  # a multiple of every lattice cell, so strips start on cell borders
    for y0 in range(0, s.height, strip):
        rows = min(strip, s.height - y0)
        lo, hi, w = y_lo[y0 : y0 + rows], y_hi[y0 : y0 + rows], y_w[y0 : y0 + rows, None]
        f = {k: v[lo] * (1 - w) + v[hi] * w for k, v in wide.items()}
        image[y0 : y0 + rows] = _render_strip(
            rng,
            f["tissue"],
            f["haem"],
            f["eosin"],
            nuclei=_lattice(y0, rows, s.width, nc, n_offset, n_radius),
            tumor=_tumor_texture(y0, rows, s.width, tc, t_offset, t_radius, in_tumor),
        )
    return Rendered(image, regions, mimics, lay["hard"])


def _render_strip(
    rng: np.random.Generator,
    tissue: np.ndarray,
    haem: np.ndarray,
    eosin: np.ndarray,
    nuclei: np.ndarray,
    tumor: np.ndarray | None,
) -> np.ndarray:
    """(rows, W, 3) uint8 colour from (rows, W) fields.

    Computed one channel plane at a time: numpy broadcasting over a trailing axis of 3 is
    several times slower than contiguous planes.
    """
    te = tissue * eosin
    teh = te * haem
    glass = 1 - tissue
    nucleus = 0.6 * tissue * nuclei
    # unit-variance uniform noise (8-bit draws are 4x cheaper than normals); the tissue's
    # grain is stronger than the glass's and partly shared by the channels
    noise = rng.integers(0, 256, (4, *tissue.shape), np.uint8)
    own = (1.5 + 0.5 * tissue) / 73.9
    shared = 3.5 * tissue / 73.9
    offset = 0.5 - 127.5 * (own + shared) + noise[3] * shared  # +0.5: round, not floor
    planes = []
    for c in range(3):
        # tissue * ((1 - haem) * PINK + haem * PURPLE) * eosin + (1 - tissue) * BACKGROUND
        plane = te * PINK[c]
        plane += teh * (PURPLE[c] - PINK[c])
        plane += glass * BACKGROUND[c]
        plane += nucleus * (NUCLEUS[c] - plane)
        plane += noise[c] * own
        plane += offset
        if tumor is not None:
            plane += tumor * TUMOR_DOT[c]
        np.clip(plane, 0, 255, out=plane)
        planes.append(plane.astype(np.uint8))
    return np.stack(planes, axis=-1)


def _tumor_texture(
    y0: int,
    rows: int,
    width: int,
    cell: int,
    offset: np.ndarray,
    radius: np.ndarray,
    in_tumor: np.ndarray,
) -> np.ndarray | None:
    """Dots minus their block mean, only in tumour blocks: invisible after block averaging."""
    here = in_tumor[y0 // cell : (y0 + rows) // cell]
    if not here.any():
        return None
    dots = _lattice(y0, rows, width, cell, offset, radius).astype(np.float32)
    block = dots.reshape(rows // cell, cell, width // cell, cell).mean(axis=(1, 3))
    block[~here] = np.nan
    pattern = np.nan_to_num(dots - _cells(block, 0, rows, width, cell), nan=0.0)
    return pattern
