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

A slide is drawn by workflow/wsi/demo_render.py; this module sets the sizes, assigns labels
and splits, and writes the pyramidal TIFFs, the labels CSV, the manifest and, per tumour
slide, its metastasis outline as Camelyon16's lesion XML (``lesions/<slide_id>.xml``, ASAP
format, a 64-gon; mimics are benign and not annotated), which give the FROC and the
tile-level AUC of the attention maps.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from tqdm import tqdm

from workflow.common.atomic import atomic_path, write_json, write_text
from workflow.common.config import schema_dataclass
from workflow.wsi.demo_render import LOW, render_slide
from workflow.wsi.labels import LABELS, SPLITS
from workflow.wsi.lesions import disc_polygon, write_asap
from workflow.wsi.slide import magnification_mpp

log = logging.getLogger("lsai.wsi.demo")


#: Fixed parts of the planted design (not config settings; tests vary some): tile size and
#: JPEG quality of the TIFF, split fractions, and the lesions (level-0 px, inclusive ranges).
DESIGN = (
    ("tile", int, 256),
    ("jpeg_quality", int, 90),
    ("splits", tuple, (("train", 0.5), ("val", 0.25), ("test", 0.25))),
    ("islands", tuple, (2, 4)),  # tissue islands per slide
    ("mimics", tuple, (3, 5)),  # textured look-alike foci per slide
    ("mimic_radius", tuple, (240, 300)),  # about two x20 tiles across
    ("tumor_radius", tuple, (560, 680)),  # the one metastasis: fills x10 tiles
    ("mimics_per_metastasis", int, 3),  # mimics a tumour slide gives up for its metastasis
    ("lesion_gap", int, 256),  # between lesions' edges (one x20 tile)
)


def _tumor_cell(self) -> int:
    """Level-0 block over which the tumour texture averages out: x5's downsample."""
    return round(magnification_mpp(5) / self.mpp)


def _check(self) -> None:
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


#: write_demo's settings: config/schema/wsi.yaml $defs/wsi_demo (sizes are level-0 pixels at
#: ``mpp`` um/px, 0.25 == x40 as Camelyon16), then DESIGN.
DemoSettings = schema_dataclass(
    "DemoSettings", "wsi_demo", __name__, DESIGN,
    tumor_cell=property(_tumor_cell), __post_init__=_check,
)  # fmt: skip


def _split_items(splits: Any) -> list[tuple[str, float]]:
    """Splits as (name, fraction) pairs, given as pairs or as a mapping (from a YAML config)."""
    items = splits.items() if isinstance(splits, Mapping) else splits
    return [(str(name), float(fraction)) for name, fraction in items]


# --------------------------------------------------------------------------- files
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
        if slide.regions:  # the metastases' outlines, as Camelyon16 annotates its lesions
            polygons = [("_0", disc_polygon(x, y, r)) for x, y, r in slide.regions]
            write_asap(root / "lesions" / f"{ids[i]}.xml", polygons)
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
