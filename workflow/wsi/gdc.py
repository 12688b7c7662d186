"""TCGA slides from GDC manifests -> the track's ``slide_id,label,split,path`` labels CSV.

A GDC manifest (the portal's "Download manifest", used by ``gdc-client download -m``) is a TSV
with ``id filename md5 size state``; gdc-client saves each file as ``<id>/<filename>``. One
manifest per class (e.g. TCGA-LUAD and TCGA-LUSC diagnostic slides) gives the labels. The
split is by patient (the barcode's first 12 characters, ``TCGA-TSS-PART``), stratified by
class and seeded, so no patient's slides fall into two splits.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from workflow.common.errors import BadSample, InputError, Skips

MANIFEST_COLUMNS = ("id", "filename", "size")
BARCODE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})-\w{3}-\w{2,3}-(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class ManifestFile:
    file_id: str
    filename: str
    size: int
    line: int


def read_manifest(path: str | PathLike[str]) -> list[ManifestFile]:
    """The files of one GDC manifest; a malformed one is an InputError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "GDC manifest not found")
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise InputError(path, f"not a GDC manifest: missing column(s) {sorted(missing)}")
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise InputError(path, f"not a text manifest: {err}") from None
    files = []
    for line, row in enumerate(rows, start=2):
        try:
            size = int(row["size"])
        except (TypeError, ValueError):
            raise InputError(path, f"line {line}: size {row['size']!r} is not an integer") from None
        if not row["id"] or not row["filename"]:
            raise InputError(path, f"line {line}: empty id or filename")
        files.append(ManifestFile(row["id"].strip(), row["filename"].strip(), size, line))
    if not files:
        raise InputError(path, "lists no file")
    return files


def patient_of(filename: str) -> str | None:
    """``TCGA-05-4244`` of ``TCGA-05-4244-01Z-00-DX1.<uuid>.svs``; None for a non-TCGA name."""
    match = BARCODE.match(filename)
    return match.group(1).upper() if match else None


def is_diagnostic(filename: str) -> bool:
    """Diagnostic (FFPE) slides carry ``DX`` in the slide part of the barcode; frozen sections
    carry ``TS``/``BS``/``MS``."""
    match = BARCODE.match(filename)
    return bool(match) and match.group(2).upper().startswith("DX")


def _local_file(slides_dir: Path, entry: ManifestFile) -> Path:
    """``<id>/<filename>`` as gdc-client writes it, or a flat ``<filename>``."""
    nested, flat = slides_dir / entry.file_id / entry.filename, slides_dir / entry.filename
    return flat if flat.exists() and not nested.exists() else nested


def split_patients(
    patients: list[str], fractions: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Patient -> split; a seeded shuffle cut by the fractions (val and test rounded, >= 1
    each when there are at least three patients)."""
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    n = len(order)
    total = sum(fractions.values())
    n_test = round(n * fractions["test"] / total)
    n_val = round(n * fractions["val"] / total)
    if n >= 3:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    cut = {"test": order[:n_test], "val": order[n_test : n_test + n_val]}
    cut["train"] = order[n_test + n_val :]
    return {p: split for split, members in cut.items() for p in members}


def labels_from_manifests(
    manifests: Mapping[str, str | PathLike[str]],
    positive: str,
    slides_dir: str | PathLike[str],
    fractions: Mapping[str, float],
    seed: int = 0,
    diagnostic_only: bool = True,
    policy: str = "skip",
    skips: Skips | None = None,
) -> list[dict[str, object]]:
    """One labels row per downloaded slide: ``positive``'s manifest is label 1, the other 0.

    A slide that is missing or whose size differs from the manifest's (an interrupted
    download) is a bad sample under ``policy``; a file listed twice, in one manifest or
    across both, and a non-TCGA file name stop the conversion.
    """
    slides_dir = Path(slides_dir)
    if positive not in manifests or len(manifests) != 2:
        raise InputError(
            "config", f"manifests must name two classes, one of them {positive!r} (positive)"
        )
    if not slides_dir.is_dir():
        raise InputError(slides_dir, "slides folder not found")
    skips = skips if skips is not None else Skips()
    seen: dict[str, str] = {}
    by_class: dict[int, list[dict[str, object]]] = {0: [], 1: []}
    for name, manifest in manifests.items():
        label = int(name == positive)
        for entry in read_manifest(manifest):
            where = f"{manifest} line {entry.line}"
            if entry.filename in seen:
                raise InputError(
                    manifest, f"{entry.filename} listed twice ({seen[entry.filename]} and {where})"
                )
            seen[entry.filename] = where
            patient = patient_of(entry.filename)
            if patient is None:
                raise InputError(manifest, f"line {entry.line}: {entry.filename} is no TCGA slide")
            if diagnostic_only and not is_diagnostic(entry.filename):
                continue
            path = _local_file(slides_dir, entry)
            try:
                if not path.is_file():
                    raise BadSample(path, f"not downloaded (listed in {where})")
                size = path.stat().st_size
                if size != entry.size:
                    raise BadSample(
                        path, f"{size} bytes, the manifest says {entry.size} (incomplete download)"
                    )
            except BadSample as err:
                if policy == "fail":
                    raise
                skips.add(err, entry.filename)
                continue
            by_class[label].append(
                {
                    "slide_id": entry.filename.split(".")[0],
                    "label": label,
                    "patient": patient,
                    "path": str(path.relative_to(slides_dir)),
                }
            )
    rows = []
    for label, members in by_class.items():
        patients = sorted({str(r["patient"]) for r in members})
        split = split_patients(patients, fractions, seed + label)
        rows += [{**r, "split": split[str(r["patient"])]} for r in members]
    if not rows:
        raise InputError(slides_dir, f"no slide of the manifests is usable ({len(skips)} skipped)")
    ids = [r["slide_id"] for r in rows]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(slides_dir, f"two files share the slide barcode(s) {twice[:5]}")
    return sorted(rows, key=lambda r: str(r["slide_id"]))
