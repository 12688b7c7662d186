"""Multi-scale tiling: tile coordinates at x5/x10/x20 with their parent-child hierarchy.

Like CLAM's "fast patching" only coordinates are stored (pixels are read again at feature
time). Tiles start from the coarsest scale's grid, aligned to level-0 coordinates; every kept
tile's footprint is split into ratio x ratio children at the next finer scale (2 x 2 for
x5 -> x10 -> x20), so each child lies inside its parent, which is what DAS-MIL's graph and
distillation need. Tissue fractions come from the tissue mask through an integral image, in
one vectorised step per scale; no tile's pixels are read. The per-tile
reference it replaces lives with its benchmark (tests/benchmarks/tiling_benchmark.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.wsi.segment import TissueMask, segment_tissue, write_pngs
from workflow.wsi.slide import ScaleRead, Slide, open_slide

log = logging.getLogger("lsai.wsi.tiling")

DEFAULT_MAGNIFICATIONS = (5.0, 10.0, 20.0)


@dataclass(frozen=True)
class TileScale:
    """One scale of a tiling: where each tile is and how to read it."""

    name: str  # "x20"
    magnification: float
    level: int  # OpenSlide level to read from
    downsample: float  # level-0 px per output px
    read_size: int  # px read at `level`, resized to `patch_size`
    patch_size: int
    footprint: int  # level-0 px covered by one tile
    coords: np.ndarray  # (N, 2) int64 level-0 (x, y) of each tile's top-left corner
    parent: np.ndarray  # (N,) int64 row in the next-coarser scale, -1 for the coarsest
    tissue: np.ndarray  # (N,) float32 tissue fraction of the footprint

    def __len__(self) -> int:
        return len(self.coords)


# How a scale is read, shared by TileScale and ScaleRead; stored as its group's attrs.
READ_FIELDS = {"magnification": float, "level": int, "downsample": float, "read_size": int,
               "patch_size": int, "footprint": int}  # fmt: skip


@dataclass(frozen=True)
class Tiling:
    slide_id: str
    slide_path: str
    mpp: float
    scales: list[TileScale]  # coarse to fine
    attrs: dict[str, Any]

    def __getitem__(self, name: str) -> TileScale:
        for scale in self.scales:
            if scale.name == name:
                return scale
        raise KeyError(name)

    @property
    def counts(self) -> dict[str, int]:
        return {s.name: len(s) for s in self.scales}


# --------------------------------------------------------------------------- tissue fractions
def integral_image(mask: np.ndarray) -> np.ndarray:
    """(h + 1, w + 1) cumulative sums with a zero first row and column: int32 for a boolean
    mask (exact, and summing rows first in int32 is several times faster than in float64),
    float64 for anything else."""
    exact = mask.dtype == bool and mask.size < np.iinfo(np.int32).max
    dtype = np.int32 if exact else np.float64
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype)
    rows = np.cumsum(mask, axis=1, dtype=np.int32 if exact else np.float64)
    np.cumsum(rows, axis=0, out=out[1:, 1:])
    return out


def _area_to(integral: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask area in [0, x) x [0, y) for real x, y: the bilinear interpolation of the integral
    image is exact for a piecewise-constant mask, so footprints need not align to mask pixels."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    x, y = np.clip(x, 0, w), np.clip(y, 0, h)
    x0 = np.minimum(np.floor(x).astype(np.intp), max(w - 1, 0))
    y0 = np.minimum(np.floor(y).astype(np.intp), max(h - 1, 0))
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, w), np.minimum(y0 + 1, h)
    return (
        integral[y0, x0] * (1 - fx) * (1 - fy)
        + integral[y0, x1] * fx * (1 - fy)
        + integral[y1, x0] * (1 - fx) * fy
        + integral[y1, x1] * fx * fy
    )


def tissue_fraction(
    integral: np.ndarray, downsample: float, coords: np.ndarray, footprint: int
) -> np.ndarray:
    """Tissue fraction of each level-0 square ``coords + [0, footprint)``; outside the mask
    (beyond the slide) counts as background."""
    x0, y0 = coords[:, 0] / downsample, coords[:, 1] / downsample
    side = footprint / downsample
    x1, y1 = x0 + side, y0 + side
    area = (
        _area_to(integral, x1, y1)
        - _area_to(integral, x0, y1)
        - _area_to(integral, x1, y0)
        + _area_to(integral, x0, y0)
    )
    return (area / (side * side)).astype(np.float32)


# --------------------------------------------------------------------------- tiling
def _threshold(min_tissue: float | Mapping[float, float], magnification: float) -> float:
    if isinstance(min_tissue, Mapping):
        matches = [v for k, v in min_tissue.items() if float(k) == magnification]
        if not matches:
            raise ValueError(f"min_tissue has no entry for x{magnification:g}")
        value = float(matches[0])
    else:
        value = float(min_tissue)
    if not 0 <= value <= 1:
        raise ValueError(f"min_tissue must lie in [0, 1], got {value} for x{magnification:g}")
    return value


def _scale(read: ScaleRead, coords: np.ndarray, parent: np.ndarray, tissue: np.ndarray):
    return TileScale(
        name=read.name,
        **{k: getattr(read, k) for k in READ_FIELDS},
        coords=coords.astype(np.int64),
        parent=parent.astype(np.int64),
        tissue=tissue.astype(np.float32),
    )


def tile_slide(
    slide: Slide,
    tissue: TissueMask,
    magnifications: Sequence[float] = DEFAULT_MAGNIFICATIONS,
    patch_size: int = 256,
    min_tissue: float | Mapping[float, float] = 0.25,
    slide_id: str | None = None,
    keep_ancestors: bool = True,
) -> Tiling:
    """Tiles of every scale whose footprint holds at least ``min_tissue`` tissue.

    Candidates: the coarsest scale's grid from level-0 (0, 0), then each candidate's
    ratio x ratio children, down to the finest scale. A tile is kept when its own tissue
    fraction reaches ``min_tissue`` (a number, or one per magnification {5: .1, 10: .25, 20: .25})
    and its parent is kept. With ``keep_ancestors`` a parent is also kept when any of its
    children is: otherwise a mostly-empty x5 tile at a tissue border (x5 covers 16 x20
    tiles) would drop x20 tiles full of tissue, and with them small tumour foci.
    """
    reads = slide.scales(magnifications, patch_size)
    thresholds = {r.name: _threshold(min_tissue, r.magnification) for r in reads}
    integral = integral_image(tissue.mask)
    width, height = slide.dimensions
    # every candidate of every scale, coarse to fine
    gx = np.arange(0, width, reads[0].footprint, dtype=np.int64)
    gy = np.arange(0, height, reads[0].footprint, dtype=np.int64)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")  # row-major: y, then x
    coords = [np.stack([xx.ravel(), yy.ravel()], axis=1)]
    parents = [np.full(xx.size, -1, np.int64)]
    for coarse, fine in zip(reads, reads[1:], strict=False):
        ratio = coarse.footprint // fine.footprint
        oy, ox = np.meshgrid(np.arange(ratio), np.arange(ratio), indexing="ij")
        offsets = np.stack([ox.ravel(), oy.ravel()], axis=1) * fine.footprint
        coords.append((coords[-1][:, None, :] + offsets[None]).reshape(-1, 2))
        parents.append(np.repeat(np.arange(len(coords[-2]), dtype=np.int64), ratio * ratio))
    fractions = [
        tissue_fraction(integral, tissue.downsample, c, r.footprint)
        for c, r in zip(coords, reads, strict=True)
    ]
    keep = [
        (f >= thresholds[r.name]) & (c[:, 0] < width) & (c[:, 1] < height)
        for c, f, r in zip(coords, fractions, reads, strict=True)
    ]
    if keep_ancestors:  # bottom-up: a kept child keeps its parent
        for k in range(len(reads) - 1, 0, -1):
            keep[k - 1][parents[k][keep[k]]] = True
    for k in range(1, len(reads)):  # top-down: no orphans
        keep[k] &= keep[k - 1][parents[k]]
    scales: list[TileScale] = []
    for k, read in enumerate(reads):
        parent = parents[k][keep[k]]
        if k > 0:  # candidate index in the coarser scale -> row among its kept tiles
            parent = (np.cumsum(keep[k - 1]) - 1)[parent]
        scales.append(_scale(read, coords[k][keep[k]], parent, fractions[k][keep[k]]))
    attrs = {
        "slide_id": slide_id or slide.path.stem,
        "slide_path": str(slide.path),
        "mpp": float(slide.mpp),
        "mpp_source": slide.mpp_source,
        "scales": [s.name for s in scales],
        "magnifications": [s.magnification for s in scales],
        "min_tissue": [thresholds[s.name] for s in scales],
        "keep_ancestors": bool(keep_ancestors),
        "dimensions": [int(width), int(height)],
        "mask_downsample": float(tissue.downsample),
        "tissue_fraction": tissue.fraction,
    }
    tiling = Tiling(attrs["slide_id"], attrs["slide_path"], slide.mpp, scales, attrs)
    log.info("%s: tiles %s", attrs["slide_id"], tiling.counts)
    return tiling


def tiling_digest(tiling: Tiling) -> str:
    """sha256 of what the features stage reads from a tiling: the slide, its resolution and
    every scale's tiles and parents (a rerun of tile with other settings changes it)."""
    digest = hashlib.sha256(f"{tiling.slide_path}|{tiling.mpp}".encode())
    for s in tiling.scales:
        digest.update(f"|{s.name}|{s.level}|{s.downsample}|{s.read_size}|{s.patch_size}".encode())
        digest.update(np.ascontiguousarray(s.coords, np.int64).tobytes())
        digest.update(np.ascontiguousarray(s.parent, np.int64).tobytes())
    return digest.hexdigest()


def write_tiling(tiling: Tiling, path: str | PathLike[str]) -> None:
    """One HDF5 per slide, written atomically (layout: see ``read_tiling``)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(tiling.attrs)
        for s in tiling.scales:
            group = h5.create_group(s.name)
            group.create_dataset("coords", data=s.coords.reshape(-1, 2), dtype=np.int64)
            group.create_dataset("parent", data=s.parent, dtype=np.int64)
            group.create_dataset("tissue", data=s.tissue, dtype=np.float32)
            group.attrs.update({k: getattr(s, k) for k in READ_FIELDS})


def read_tiling(path: str | PathLike[str]) -> Tiling:
    """A tiling file back as arrays.

    Layout: file attrs ``slide_id``, ``slide_path``, ``mpp``, ``scales`` (group names, coarse
    to fine), ...; per scale a group (``x5``, ``x10``, ``x20``) with datasets ``coords``
    int64 (N, 2) level-0 (x, y) top-left, ``parent`` int64 (N,) row in the next-coarser
    group (-1 for the coarsest), ``tissue`` float32 (N,), and attrs ``magnification``,
    ``level``, ``downsample``, ``read_size``, ``patch_size``, ``footprint``.
    """
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(path, "tiling file not found") from None
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 tiling file: {err}") from None
    with h5:
        try:
            attrs = {k: _plain(v) for k, v in h5.attrs.items()}
            scales = []
            for name in attrs["scales"]:
                g = h5[name]
                scales.append(
                    TileScale(
                        name=name,
                        **{k: cast(g.attrs[k]) for k, cast in READ_FIELDS.items()},
                        coords=g["coords"][()],
                        parent=g["parent"][()],
                        tissue=g["tissue"][()],
                    )
                )
        except KeyError as err:
            raise InputError(path, f"tiling file lacks {err}") from None
    return Tiling(
        str(attrs["slide_id"]), str(attrs["slide_path"]), float(attrs["mpp"]), scales, attrs
    )


def _plain(value: Any) -> Any:
    """h5py attribute -> plain Python (lists of str instead of object arrays)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def tile_file(
    slide_path: str | PathLike[str],
    out_h5: str | PathLike[str],
    *,
    magnifications: Sequence[float] = DEFAULT_MAGNIFICATIONS,
    patch_size: int = 256,
    min_tissue: float | Mapping[float, float] = 0.25,
    mpp: float | None = None,
    slide_id: str | None = None,
    thumbnail_png: str | PathLike[str] | None = None,
    mask_png: str | PathLike[str] | None = None,
    segment: dict[str, float] | None = None,
    keep_ancestors: bool = True,
) -> Tiling:
    """The whole stage for one slide: open, segment, tile, write (HDF5 last)."""
    with open_slide(slide_path, mpp=mpp) as slide:
        tissue = segment_tissue(slide, **(segment or {}))
        tiling = tile_slide(
            slide, tissue, magnifications, patch_size, min_tissue, slide_id, keep_ancestors
        )
    if thumbnail_png is not None and mask_png is not None:
        write_pngs(tissue, thumbnail_png, mask_png)
    write_tiling(tiling, out_h5)
    return tiling
