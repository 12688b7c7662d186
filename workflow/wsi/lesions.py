"""Lesion annotations (ASAP XML, as Camelyon16 ships them) -> tumour masks, tile labels and
the challenge's evaluation mask (its lesions and Isolated Tumour Cells).

ASAP XML: ``<ASAP_Annotations><Annotations><Annotation Name=".." Type="Polygon"
PartOfGroup=".."><Coordinates><Coordinate Order="0" X=".." Y=".."/>...``, level-0 pixels.
Camelyon16's groups: ``_0`` and ``_1`` (and ``Tumor`` in some files, ``metastases`` in
Camelyon17's) are tumour; ``_2`` (``Exclusion``) are non-tumour regions cut out of them. The
tumour mask is the union of the tumour polygons minus the union of the exclusions, drawn at
:data:`EVAL_DOWNSAMPLE` (a mask pixel is in when its centre is).

Evaluation mask (the challenge's ``Evaluation_FROC.py``, re-derived here): the tumour mask at
level 5 (32 level-0 px per pixel) is dilated by half of 75 um (a lesion's diameter grows by
75 um, about five tumour cells), its holes are filled and its 8-connected components are the
lesions. A lesion whose major axis (of the ellipse with its second moments) is below 275 um
(200 um plus the dilation) is an Isolated Tumour Cell cluster: a detection in it is neither
a true nor a false positive. The challenge takes 0.243 um/px for every slide; here each
slide's own resolution is used.

Tile labels: a tile is tumour when at least ``tile_tumor_fraction`` (default 0.5) of its
footprint is tumour in the (undilated) tumour mask; the fraction itself is stored too.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy import ndimage

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.wsi.tiling import integral_image, read_tiling, tissue_fraction

log = logging.getLogger("lsai.wsi.lesions")

TUMOR_GROUPS = ("_0", "_1", "tumor", "metastases")
EXCLUDED_GROUPS = ("_2", "exclusion")
POLYGON_TYPES = ("polygon", "spline", "rectangle")
EVAL_DOWNSAMPLE = 32  # level 5 of a x40 pyramid
DILATION_UM = 75.0  # added to a lesion's diameter (half of it around its border)
ITC_AXIS_UM = 275.0  # 200 um + the dilation
# Camelyon16's largest annotation files are a few MB: more is a damaged file or a zip bomb
MAX_XML_BYTES = 64 << 20


@dataclass(frozen=True)
class Annotations:
    """One slide's polygons, level-0 (x, y) vertices each."""

    tumor: list[np.ndarray]
    excluded: list[np.ndarray]


def _number(text: str | None, where: Path, what: str) -> float:
    try:
        value = float(str(text).replace(",", "."))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(where, f"{what}: {text!r} is not a finite number")
    return value


def parse_asap(text: bytes | str, where: str | PathLike[str]) -> Annotations:
    """An ASAP annotation file's tumour and exclusion polygons (``where`` names it in errors)."""
    where = Path(where)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise InputError(where, f"not an XML file: {err}") from None
    if root.tag != "ASAP_Annotations":
        raise InputError(where, f"not an ASAP annotation file (root <{root.tag}>)")
    tumor, excluded = [], []
    for k, node in enumerate(root.iter("Annotation")):
        name = node.get("Name") or f"#{k}"
        group = (node.get("PartOfGroup") or "").strip()
        kind = (node.get("Type") or "").strip().lower()
        what = f"annotation {name!r}"
        if group.lower() in TUMOR_GROUPS:
            target = tumor
        elif group.lower() in EXCLUDED_GROUPS:
            target = excluded
        else:
            raise InputError(
                where, f"{what}: group {group!r} is neither tumour {TUMOR_GROUPS} nor "
                f"exclusion {EXCLUDED_GROUPS}",
            )  # fmt: skip
        if kind not in POLYGON_TYPES:
            raise InputError(where, f"{what}: type {node.get('Type')!r} is not a polygon")
        points = sorted(
            (_number(c.get("Order", i), where, what), _number(c.get("X"), where, what),
             _number(c.get("Y"), where, what))
            for i, c in enumerate(node.iter("Coordinate"))
        )  # fmt: skip
        if kind == "rectangle" and len(points) == 2:
            (_, x0, y0), (_, x1, y1) = points
            points = [(0, x0, y0), (1, x1, y0), (2, x1, y1), (3, x0, y1)]
        if len(points) < 3:
            raise InputError(where, f"{what}: {len(points)} vertices, a polygon needs 3")
        target.append(np.array([(x, y) for _, x, y in points], np.float64))
    return Annotations(tumor, excluded)


def read_asap(path: str | PathLike[str]) -> Annotations:
    path = Path(path)
    try:
        return parse_asap(path.read_bytes(), path)
    except FileNotFoundError:
        raise InputError(path, "annotation file not found") from None


def _fill(polygons: Sequence[np.ndarray], shape: tuple[int, int], downsample: float) -> np.ndarray:
    from skimage.draw import polygon as draw_polygon

    mask = np.zeros(shape, bool)
    for points in polygons:
        # pixel (i, j) covers level-0 [j, j + 1) * downsample: its centre is at index j
        rr, cc = draw_polygon(
            points[:, 1] / downsample - 0.5, points[:, 0] / downsample - 0.5, shape
        )
        mask[rr, cc] = True
    return mask


def tumor_mask(
    annotations: Annotations, dimensions: tuple[int, int], downsample: float = EVAL_DOWNSAMPLE
) -> np.ndarray:
    """Boolean (ceil(H / ds), ceil(W / ds)) mask: tumour polygons minus exclusions."""
    width, height = dimensions
    shape = (-(-int(height) // int(downsample)), -(-int(width) // int(downsample)))
    mask = _fill(annotations.tumor, shape, downsample)
    if annotations.excluded:
        mask &= ~_fill(annotations.excluded, shape, downsample)
    return mask


def evaluation_mask(mask: np.ndarray, pixel_um: float) -> tuple[np.ndarray, list[int]]:
    """(lesion labels, ITC labels) of a tumour mask whose pixels are ``pixel_um`` wide: the
    module docstring's rule. Labels are 1.. in scan order, 0 outside every lesion."""
    from skimage.measure import label, regionprops

    if not mask.any():
        return np.zeros(mask.shape, np.int32), []
    distance = ndimage.distance_transform_edt(~mask)
    grown = ndimage.binary_fill_holes(distance < DILATION_UM / 2 / pixel_um)
    lesions = label(grown, connectivity=2).astype(np.int32)
    itc = [
        int(region.label)
        for region in regionprops(lesions)
        if region.axis_major_length * pixel_um < ITC_AXIS_UM
    ]
    return lesions, itc


def tile_tumor_fraction(
    mask: np.ndarray, downsample: float, coords: np.ndarray, footprint: float
) -> np.ndarray:
    """Tumour fraction of each level-0 square ``coords + [0, footprint)`` (top-left coords)."""
    coords = np.asarray(coords, np.float64).reshape(-1, 2)
    return tissue_fraction(integral_image(mask), downsample, coords, footprint)


# --------------------------------------------------------------------------- the stage
def find_annotation(
    folders: Sequence[str | PathLike[str]], slide_id: str
) -> tuple[str, bytes] | None:
    """``<slide_id>.xml`` in a folder, or in the folder's ``.zip`` (as Camelyon16 ships its
    annotations); (where, content) or None."""
    for folder in map(Path, folders):
        path = folder / f"{slide_id}.xml"
        if path.is_file():
            _check_size(path, path.stat().st_size)
            return str(path), path.read_bytes()
        archive = folder.with_name(folder.name + ".zip")
        if not folder.is_dir() and archive.is_file():
            try:
                with zipfile.ZipFile(archive) as zf:
                    for name in zf.namelist():
                        if Path(name).name == f"{slide_id}.xml":
                            _check_size(f"{archive}:{name}", zf.getinfo(name).file_size)
                            return f"{archive}:{name}", zf.read(name)
            except zipfile.BadZipFile as err:
                raise InputError(archive, f"not a readable zip: {err}") from None
    return None


def _check_size(where: str | PathLike[str], size: int) -> None:
    """An annotation file (or a zip member, by its declared size: reading never goes past
    it) too large to be one."""
    if size > MAX_XML_BYTES:
        raise InputError(
            where, f"{size} bytes, more than an annotation file holds ({MAX_XML_BYTES})"
        )


def lesions_dataset(
    tiles: Path,
    folders: Sequence[str | PathLike[str]],
    index: Path,
    skipped: Path,
    settings: Mapping[str, Any],
    policy: str,
) -> None:
    """Per slide of the tiling index: its tumour mask, evaluation mask and ITCs and every
    scale's tile tumour fractions (one HDF5 each, layout in :func:`write_lesions`).

    A tumour slide without an annotation file is written unannotated (``annotated`` 0):
    lesion-level evaluation leaves it out. An annotation of a normal slide is an error of
    that slide.
    """
    from workflow.wsi.prepare import read_index, run_per_slide

    missing = [f for f in map(Path, folders) if not f.is_dir()
               and not f.with_name(f.name + ".zip").is_file()]  # fmt: skip
    for folder in missing:
        log.warning("%s: no annotation folder (nor %s.zip)", folder, folder.name)
    out = index.parent
    rows = read_index(tiles).to_dict("records")
    threshold = float(settings["tile_tumor_fraction"])

    def work(row: dict[str, Any]) -> dict[str, Any]:
        tiling = read_tiling(row["tiles"])
        found = find_annotation(folders, str(row["slide_id"]))
        if found is not None and int(row["label"]) == 0:
            raise InputError(found[0], f"lesion annotations of {row['slide_id']}, labelled normal")
        annotations = parse_asap(found[1], found[0]) if found else Annotations([], [])
        width, height = tiling.attrs["dimensions"]
        mask = tumor_mask(annotations, (width, height))
        pixel_um = float(tiling.mpp) * EVAL_DOWNSAMPLE
        lesions, itc = evaluation_mask(mask, pixel_um)
        annotated = found is not None or int(row["label"]) == 0
        if not annotated:
            log.warning("%s: tumour slide without lesion annotations", row["slide_id"])
        path = out / f"{row['slide_id']}.h5"
        fractions = {
            s.name: tile_tumor_fraction(mask, EVAL_DOWNSAMPLE, s.coords, s.footprint)
            for s in tiling.scales
        }
        attrs = {
            "slide_id": str(row["slide_id"]),
            "annotated": annotated,
            "source": found[0] if found else "",
            "downsample": EVAL_DOWNSAMPLE,
            "pixel_um": pixel_um,
            "tile_tumor_fraction": threshold,
        }
        write_lesions(path, mask, lesions, itc, fractions, attrs)
        finest = fractions[tiling.scales[-1].name]
        return {
            "lesions": str(path),
            "annotated": int(annotated),
            "n_lesions": int(lesions.max()) - len(itc),
            "n_itc": len(itc),
            "tumor_tiles": int((finest >= threshold).sum()),
        }

    run_per_slide(rows, work, policy, index, skipped, "lesions")


def write_lesions(
    path: Path,
    mask: np.ndarray,
    lesions: np.ndarray,
    itc: Sequence[int],
    fractions: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
) -> None:
    """One slide's file: ``tumor`` (uint8 mask) and ``evaluation`` (int32 lesion labels) at
    ``downsample`` level-0 px per pixel, attrs ``itc`` (ITC labels), ``downsample``,
    ``pixel_um``, ``annotated``, ``tile_tumor_fraction``; per tiling scale a group with
    ``tumor_fraction`` (one per tile, in the tiling's order)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(dict(attrs))
        h5.attrs["itc"] = np.asarray(list(itc), np.int64)
        h5.create_dataset("tumor", data=mask.astype(np.uint8), compression="gzip")
        h5.create_dataset("evaluation", data=lesions.astype(np.int32), compression="gzip")
        for name, values in fractions.items():
            h5.create_group(name).create_dataset("tumor_fraction", data=values.astype(np.float32))


@dataclass(frozen=True)
class SlideLesions:
    """What lesion-level evaluation needs of one slide (read back from the stage's file)."""

    slide_id: str
    annotated: bool
    mask: np.ndarray  # bool tumour mask
    evaluation: np.ndarray  # int32 lesion labels
    itc: frozenset[int]
    downsample: float
    tile_tumor_fraction: float


def read_lesions(path: str | PathLike[str]) -> SlideLesions:
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except (FileNotFoundError, OSError) as err:
        raise InputError(path, f"not a readable lesions file: {err}") from None
    with h5:
        try:
            return SlideLesions(
                str(h5.attrs["slide_id"]), bool(h5.attrs["annotated"]), h5["tumor"][()] > 0,
                h5["evaluation"][()], frozenset(int(v) for v in h5.attrs["itc"]),
                float(h5.attrs["downsample"]), float(h5.attrs["tile_tumor_fraction"]),
            )  # fmt: skip
        except KeyError as err:
            raise InputError(path, f"lesions file lacks {err}") from None


def write_asap(path: str | PathLike[str], polygons: Sequence[tuple[str, np.ndarray]]) -> None:
    """An ASAP annotation file of ``(group, (N, 2) level-0 x, y)`` polygons, written
    atomically (the format :func:`parse_asap` reads; Camelyon16's groups ``_0``, ``_2``)."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for k, (group, points) in enumerate(polygons):
        node = ET.SubElement(
            annotations, "Annotation",
            Name=f"Annotation {k}", Type="Polygon", PartOfGroup=group, Color="#F4FA58",
        )  # fmt: skip
        coordinates = ET.SubElement(node, "Coordinates")
        for order, (x, y) in enumerate(np.asarray(points, np.float64)):
            ET.SubElement(coordinates, "Coordinate", Order=str(order), X=f"{x:.4f}", Y=f"{y:.4f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    for group in dict.fromkeys(g for g, _ in polygons):
        node = ET.SubElement(groups, "Group", Name=group, PartOfGroup="None", Color="#64FE2E")
        ET.SubElement(node, "Attributes")
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)


def disc_polygon(cx: float, cy: float, radius: float, vertices: int = 64) -> np.ndarray:
    """(vertices, 2) level-0 x, y around a disc (the demo's metastases as polygons)."""
    angle = 2 * np.pi * np.arange(vertices) / vertices
    return np.stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)], axis=1)
