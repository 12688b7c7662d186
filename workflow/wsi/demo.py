"""Seeded synthetic Camelyon16: pyramidal JPEG-tiled TIFF slides, a labels CSV, a manifest.

Slides carry pink H&E-like tissue islands (with nuclei and darker purple blobs) on a white
background, in the real format: each pyramid level is its own top-level tiled TIFF page (the
reduced ones with ``subfiletype=1``) with its resolution in centimetres, so OpenSlide sees
every level and reports ``openslide.mpp-x``.

The planted effect needs both of DAS-MIL's scales, as metastases do on real slides: tumour-like
cells are seen at the fine scale, but what makes them a metastasis rather than a benign
look-alike is the extent of the lesion, seen with the context of the coarser scale.

- Texture (fine scales only): a dense lattice of tiny dark dots whose mean over every
  ``tumor_cell``-sized block is zero. The pyramid is built by block means, so at x5
  (downsample 8 at 0.25 um/px) textured and plain tissue are identical; x20 and x10 show it.
- Every slide, of either class, carries ``mimics`` = 3-5 textured look-alike foci (benign
  mimics) of radius ``mimic_radius`` = 240-300 px. With the demo's 128 px tiles an x20 tile
  spans 256 level-0 px and an x10 tile 512, so a mimic fills whole x20 tiles but only about
  half of an x10 tile.
- A tumour slide has one metastasis of radius ``tumor_radius`` = 560-680 px, which fills
  whole x10 tiles and a dozen x20 tiles, and gives up ``mimics_per_metastasis`` = 3 of its
  mimics for it (0-2 left): its textured area is about 1.5 times a normal slide's. Lesions
  keep ``lesion_gap`` = 256 px (one x20 tile) between their edges where the tissue has room.
- So an x20 tile inside a lesion looks the same in both classes; what tells a metastasis is
  that its neighbours and its x10 parent are textured too. A model of x20 tiles alone has
  only the amount of texture per slide to go on. Classes 50/50, split 50/25/25 into
  train/val/test, stratified.

Expected ordering: DAS-MIL (x10 and x20 graph with spatial and parent-child edges) above the
single-scale x20 models (ABMIL, DSMIL, max pooling), which see the texture but not its
extent, above the x5-only model (``dsmil_x5``), blind to the texture and at chance.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage
from tqdm import tqdm

from workflow.common.atomic import atomic_path, write_json, write_text
from workflow.common.config import frozen, schema_defaults
from workflow.wsi.labels import LABELS, SPLITS
from workflow.wsi.slide import magnification_mpp

log = logging.getLogger("lsai.wsi.demo")

LOW = 16  # level-0 px per cell of the low-resolution layout (tissue, colour, blobs)
PINK = (225.0, 158.0, 198.0)  # eosin-stained stroma
PURPLE = (128.0, 78.0, 168.0)  # haematoxylin-rich tissue
NUCLEUS = (88.0, 48.0, 128.0)
BACKGROUND = (244.0, 243.0, 246.0)
TUMOR_DOT = (-70.0, -85.0, -45.0)  # darkening of a tumour dot's pixels


#: The schema's defaults (config/schema/wsi.yaml $defs/wsi_demo): the one source.
DEMO = frozen(schema_defaults("wsi_demo"))


@dataclass(frozen=True)
class DemoSettings:
    """Sizes are level-0 pixels at ``mpp`` um/px (0.25 == x40, as Camelyon16)."""

    slides: int = DEMO["slides"]
    width: int = DEMO["width"]
    height: int = DEMO["height"]
    mpp: float = DEMO["mpp"]
    levels: int = DEMO["levels"]  # downsamples 1, 2, 4, 8
    tile: int = 256
    jpeg_quality: int = 90
    tumor_fraction: float = DEMO["tumor_fraction"]
    splits: tuple[tuple[str, float], ...] = (("train", 0.5), ("val", 0.25), ("test", 0.25))
    islands: tuple[int, int] = (2, 4)  # tissue islands per slide (inclusive range)
    mimics: tuple[int, int] = (3, 5)  # textured look-alike foci per slide (inclusive range)
    mimic_radius: tuple[int, int] = (240, 300)  # level-0 px: about two x20 tiles across
    tumor_radius: tuple[int, int] = (560, 680)  # the one metastasis: fills x10 tiles
    mimics_per_metastasis: int = 3  # mimics a tumour slide gives up for its metastasis
    lesion_gap: int = 256  # level-0 px between lesions' edges (one x20 tile)
    seed: int = DEMO["seed"]

    @property
    def tumor_cell(self) -> int:
        """Level-0 block over which the tumour texture averages out: x5's downsample."""
        return round(magnification_mpp(5) / self.mpp)

    def __post_init__(self) -> None:
        if self.tumor_cell < 4 or abs(self.tumor_cell * self.mpp - magnification_mpp(5)) > 1e-6:
            raise ValueError("mpp must divide x5's 2 um/px into a whole block of >= 4 px")
        block = max(self.tumor_cell, LOW, 2 ** (self.levels - 1))
        if self.width % block or self.height % block:
            raise ValueError(f"width and height must be multiples of {block}")
        if self.levels < 3:
            raise ValueError("at least 3 pyramid levels")
        if not 0 <= self.tumor_fraction <= 1:
            raise ValueError("tumor_fraction must lie in [0, 1]")
        if {name for name, _ in _split_items(self.splits)} - set(SPLITS):
            raise ValueError(f"split names must be among {SPLITS}")


def _split_items(splits: Any) -> list[tuple[str, float]]:
    """Splits as (name, fraction) pairs, given as pairs or as a mapping (from a YAML config)."""
    items = splits.items() if isinstance(splits, Mapping) else splits
    return [(str(name), float(fraction)) for name, fraction in items]


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


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Levels by rounded 2x2 block means, as scanners build them; block means are also what
    keeps the tumour dots invisible at coarse levels."""
    out = [image]
    for _ in range(levels - 1):
        prev = out[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        total = prev[0:h:2, 0:w:2].astype(np.uint16)
        total += prev[1:h:2, 0:w:2]
        total += prev[0:h:2, 1:w:2]
        total += prev[1:h:2, 1:w:2]
        total += 2
        out.append((total >> 2).astype(np.uint8))
    return out


def write_slide(
    path: str | PathLike[str], levels: Sequence[np.ndarray], mpp: float, tile: int, quality: int
) -> None:
    """Pyramidal TIFF as OpenSlide's generic-tiff reader wants it (one page per level)."""
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        for k, level in enumerate(levels):
            level_mpp = mpp * levels[0].shape[1] / level.shape[1]
            tif.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": quality},
                subfiletype=0 if k == 0 else 1,
                resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                resolutionunit="CENTIMETER",
                metadata=None,
            )


# --------------------------------------------------------------------------- dataset
def _assign(rng: np.random.Generator, s: DemoSettings) -> list[tuple[int, str]]:
    """(label, split) per slide: classes and splits stratified, order seeded."""
    n_tumor = round(s.slides * s.tumor_fraction)
    labels = np.array([1] * n_tumor + [0] * (s.slides - n_tumor))
    rng.shuffle(labels)
    names = [name for name, _ in _split_items(s.splits)]
    fractions = np.array([f for _, f in _split_items(s.splits)], float)
    fractions = fractions / fractions.sum()
    splits = [""] * s.slides
    for cls in (0, 1):
        idx = np.nonzero(labels == cls)[0]
        counts = np.floor(fractions * idx.size).astype(int)
        for j in np.argsort(-(fractions * idx.size - counts))[: idx.size - counts.sum()]:
            counts[j] += 1
        start = 0
        for name, n in zip(names, counts, strict=True):
            for i in idx[start : start + n]:
                splits[i] = name
            start += n
    return list(zip(labels.tolist(), splits, strict=True))


def _slide_ids(assigned: list[tuple[int, str]]) -> list[str]:
    """Camelyon16 names: normal_NNN / tumor_NNN for training slides, test_NNN for test."""
    counters: dict[str, int] = {}
    ids = []
    for label, split in assigned:
        prefix = "test" if split == "test" else LABELS[label]
        counters[prefix] = counters.get(prefix, 0) + 1
        ids.append(f"{prefix}_{counters[prefix]:03d}")
    return ids


def write_demo(root: str | PathLike[str], settings: DemoSettings) -> dict[str, Any]:
    """Write the demo dataset under ``root``; ``manifest.json`` last, as the completion mark."""
    root = Path(root)
    s = settings
    assigned = _assign(np.random.default_rng([s.seed, 0xC16]), s)
    ids = _slide_ids(assigned)
    entries = []
    for i in tqdm(range(s.slides), desc="demo slides", mininterval=5):
        label, split = assigned[i]
        slide = render_slide(np.random.default_rng([s.seed, i]), s, tumor=bool(label))
        path = root / "slides" / f"{ids[i]}.tif"
        write_slide(path, pyramid(slide.image, s.levels), s.mpp, s.tile, s.jpeg_quality)
        entries.append(
            {
                "slide_id": ids[i],
                "file": f"slides/{ids[i]}.tif",
                "label": LABELS[label],
                "split": split,
                "width": s.width,
                "height": s.height,
                "mpp": s.mpp,
                "tissue_fraction": round(float(slide.tissue.mean()), 4),
                "tumor_regions": [{"x": x, "y": y, "radius": r} for x, y, r in slide.regions],
                "mimic_regions": [{"x": x, "y": y, "radius": r} for x, y, r in slide.mimics],
            }
        )
    entries.sort(key=lambda e: e["slide_id"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["slide_id", "label", "split"])
    writer.writerows([e["slide_id"], e["label"], e["split"]] for e in entries)
    write_text(root / "labels.csv", buf.getvalue())
    manifest = {"format": "camelyon16", "settings": asdict(s), "slides": entries}
    write_json(root / "manifest.json", manifest)
    log.info("wrote %d demo slides under %s", s.slides, root)
    return manifest
