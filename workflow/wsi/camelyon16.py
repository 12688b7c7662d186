"""Camelyon16 as distributed -> the track's ``slide_id,label,split,path`` labels CSV.

The challenge's layout under one root folder::

    training/normal/normal_001.tif ...      160 normal training slides
    training/tumor/tumor_001.tif ...        111 tumour training slides
    training/lesion_annotations/            tumour_NNN.xml (ASAP, workflow/wsi/lesions.py)
    testing/images/test_001.tif ...         130 test slides
    testing/reference.csv                   test_001,Tumor,Macro,  /  test_002,Normal,,
    testing/lesion_annotations/             test_NNN.xml of the tumour test slides

(the annotation folders are also read as the distributed ``lesion_annotations.zip``).
Training slides take their label from their folder, test slides from ``reference.csv``
(slide, ``Normal``/``Tumor``, the largest lesion's class, and a free comment; no header).

Split: the 130 test slides are ``test``. The challenge has no validation set, and the
DAS-MIL/DSMIL reference code selects its checkpoint on the test slides; here a seeded
validation subset is drawn from the training slides instead, stratified by class
(``round(fraction * n)`` of each class, at least one when the class has two or more slides),
so the test slides are never looked at before evaluation.
"""

from __future__ import annotations

import csv
import logging
from os import PathLike
from pathlib import Path

import numpy as np

from workflow.common.errors import InputError
from workflow.wsi.labels import LABELS, SLIDE_SUFFIXES

TRAINING = {"normal": "training/normal", "tumor": "training/tumor"}
TEST_IMAGES = "testing/images"
REFERENCE = "testing/reference.csv"
#: Where the lesion XMLs are (folders, or the same names + ``.zip`` as distributed).
ANNOTATIONS = ("training/lesion_annotations", "testing/lesion_annotations")

log = logging.getLogger("lsai.wsi.camelyon16")


def _slides_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(folder, "Camelyon16 folder not found")
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES:
            if path.stem in found:
                raise InputError(
                    folder, f"two files of slide {path.stem}: {found[path.stem].name}, {path.name}"
                )
            found[path.stem] = path
    if not found:
        raise InputError(folder, f"no slide file ({', '.join(SLIDE_SUFFIXES)}) in it")
    return found


def read_reference(path: str | PathLike[str]) -> dict[str, int]:
    """``reference.csv``: test slide -> label (0 normal, 1 tumour), one row per slide.

    Rows are ``slide,Normal|Tumor[,lesion class[,comment]]``; a header row (its second field
    ``label``/``class``) and blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "Camelyon16 reference.csv not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as err:
        raise InputError(path, f"not a text CSV: {err}") from None
    labels: dict[str, int] = {}
    lines: dict[str, int] = {}
    for line, row in enumerate(rows, start=1):
        fields = [f.strip() for f in row]
        if not any(fields):
            continue
        if line == 1 and len(fields) > 1 and fields[1].lower() in ("label", "class", "type"):
            continue
        if len(fields) < 2 or not fields[0]:
            raise InputError(path, f"line {line}: expected `slide,Normal|Tumor,...`, got {row!r}")
        slide, label = Path(fields[0]).stem, fields[1].lower()
        if label not in LABELS:
            raise InputError(path, f"line {line}: label {fields[1]!r} is neither Normal nor Tumor")
        if slide in labels:
            raise InputError(
                path, f"line {line}: {slide} listed again (first on line {lines[slide]})"
            )
        labels[slide], lines[slide] = LABELS.index(label), line
    if not labels:
        raise InputError(path, "lists no slide")
    return labels


def validation_split(slide_ids: list[str], fraction: float, seed: int, label: int) -> set[str]:
    """The validation slides of one class: a seeded draw of ``round(fraction * n)`` (at least
    one of two or more slides when ``fraction > 0``)."""
    n = len(slide_ids)
    count = round(n * fraction)
    if fraction > 0 and n >= 2:
        count = max(count, 1)
    count = min(count, n - 1) if n >= 2 else 0
    order = np.random.default_rng([seed, label]).permutation(n)
    return {sorted(slide_ids)[i] for i in order[:count]}


def camelyon16_labels(
    root: str | PathLike[str], val_fraction: float = 0.1, seed: int = 0
) -> list[dict[str, object]]:
    """One labels row per slide of a Camelyon16 root (module docstring), sorted by slide id;
    ``path`` is relative to ``root`` (the slides folder of the rows)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "Camelyon16 root folder not found")
    if not 0 <= val_fraction < 1:
        raise InputError("config", f"val fraction must lie in [0, 1), got {val_fraction}")
    rows: dict[str, dict[str, object]] = {}

    def add(slide_id: str, path: Path, label: int, split: str) -> None:
        if slide_id in rows:
            raise InputError(path, f"slide {slide_id} also at {root / str(rows[slide_id]['path'])}")
        rows[slide_id] = {"slide_id": slide_id, "label": LABELS[label], "split": split,
                          "path": path.relative_to(root).as_posix()}  # fmt: skip

    for label, name in enumerate(LABELS):
        slides = _slides_in(root / TRAINING[name])
        val = validation_split(list(slides), val_fraction, seed, label)
        for slide_id, path in slides.items():
            add(slide_id, path, label, "val" if slide_id in val else "train")
    reference = root / REFERENCE
    labels = read_reference(reference)
    images = _slides_in(root / TEST_IMAGES)
    unknown = sorted(set(labels) - set(images))
    if unknown:
        raise InputError(
            reference, f"row(s) naming no slide in {root / TEST_IMAGES}: {', '.join(unknown[:5])}"
        )
    missing = sorted(set(images) - set(labels))
    if missing:
        raise InputError(
            reference, f"test slide(s) with no row: {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
        )  # fmt: skip
    for slide_id, path in images.items():
        add(slide_id, path, labels[slide_id], "test")
    return [rows[k] for k in sorted(rows)]


def annotation_folders(root: str | PathLike[str]) -> list[Path]:
    """The lesion annotation folders of a Camelyon16 root (absent ones included: the lesions
    stage also looks for their ``.zip`` and reports what it finds)."""
    return [Path(root) / folder for folder in ANNOTATIONS]


def camelyon16_dataset(
    root: str | PathLike[str], labels: str | PathLike[str], val_fraction: float, seed: int
) -> None:
    """The stage: the labels CSV of a Camelyon16 root (``slide_id,label,split,path``)."""
    import pandas as pd

    from workflow.common.atomic import atomic_path

    table = pd.DataFrame(camelyon16_labels(root, val_fraction, seed))
    with atomic_path(labels) as tmp:
        table.to_csv(tmp, index=False)
    counts = table.groupby(["split", "label"]).size().to_dict()
    log.info("%d slides -> %s (split, label: %s)", len(table), labels, counts)
