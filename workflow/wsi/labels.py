"""The slide list of a dataset: ``slide_id,label,split`` rows, checked against the slides.

Camelyon16's folders and reference CSV (workflow/wsi/camelyon16.py, rule wsi_camelyon16) and
TCGA manifests (workflow/wsi/gdc.py, rule wsi_labels) are converted to this one layout (see
config/schema/wsi.yaml); the demo writes it directly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from workflow.common.errors import InputError
from workflow.common.paths import inside, plain_name

LABELS = ("normal", "tumor")
SPLITS = ("train", "val", "test")
SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".bif")


@dataclass(frozen=True)
class SlideLabel:
    slide_id: str
    label: int  # 0 normal, 1 tumor
    split: str
    path: Path


def _find_slide(slides_dir: Path, slide_id: str, suffixes: tuple[str, ...]) -> Path | None:
    direct = slides_dir / slide_id
    if direct.suffix.lower() in suffixes:
        return direct if direct.is_file() else None
    for suffix in suffixes:
        candidate = slides_dir / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_labels(
    csv_path: str | PathLike[str],
    slides_dir: str | PathLike[str],
    suffixes: tuple[str, ...] = SLIDE_SUFFIXES,
) -> list[SlideLabel]:
    """Rows of ``slide_id,label,split`` checked against each other and against the slides.

    Labels may be ``normal``/``tumor`` (any case, as Camelyon16 writes them) or 0/1. An
    optional ``path`` column gives a slide's file relative to ``slides_dir`` (gdc-client
    downloads into ``<file id>/<file name>``); otherwise ``<slide_id><suffix>`` is looked up.
    """
    csv_path, slides_dir = Path(csv_path), Path(slides_dir)
    if not csv_path.is_file():
        raise InputError(csv_path, "labels CSV not found")
    if not slides_dir.is_dir():
        raise InputError(slides_dir, "slides folder not found")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"slide_id", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(csv_path, f"missing column(s) {sorted(missing)}")
        rows = list(reader)
    if not rows:
        raise InputError(csv_path, "no slides listed")
    out: list[SlideLabel] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        slide_id = (row["slide_id"] or "").strip()
        label = (row["label"] or "").strip().lower()
        split = (row["split"] or "").strip().lower()
        if not slide_id:
            raise InputError(csv_path, f"line {line}: empty slide_id")
        plain_name(slide_id, csv_path, f"line {line}: slide_id")  # it names output files
        if slide_id in seen:
            raise InputError(
                csv_path, f"duplicate slide_id {slide_id!r} (lines {seen[slide_id]} and {line})"
            )
        seen[slide_id] = line
        if label in LABELS:
            value = LABELS.index(label)
        elif label in ("0", "1"):
            value = int(label)
        else:
            raise InputError(csv_path, f"line {line}: label {row['label']!r} not in {LABELS}")
        if split not in SPLITS:
            raise InputError(csv_path, f"line {line}: split {row['split']!r} not in {SPLITS}")
        given = (row.get("path") or "").strip()
        if given:
            path = inside(slides_dir, given, f"{csv_path}: line {line}")
            path = path if path.is_file() else None
        else:
            path = _find_slide(slides_dir, slide_id, suffixes)
        if path is None:
            expected = slides_dir / (
                given
                or (
                    slide_id
                    if Path(slide_id).suffix.lower() in suffixes
                    else slide_id + suffixes[0]
                )
            )
            raise InputError(expected, f"slide listed in {csv_path} (line {line}) not found")
        out.append(SlideLabel(slide_id, value, split, path))
    return out
