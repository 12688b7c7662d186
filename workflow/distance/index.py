"""``distance_index``: annotations -> one Parquet table of valid objects per split."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError, Skips
from workflow.distance.motsynth import ROW_COLUMNS, read_sequence

log = logging.getLogger("lsai.distance.index")
SPLITS = ("train", "val", "test")
SPLIT_KEY = "distance.index.split_sequences"


def annotation_files(root: Path) -> list[Path]:
    folder = root / "annotations"
    if not folder.is_dir():
        raise InputError(
            folder, "annotation folder not found (expected <root>/annotations/<seq>.json)"
        )
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InputError(folder, "no <seq>.json annotation files")
    return files


def assign_splits(
    sequences: Sequence[str],
    fractions: Mapping[str, float],
    seed: int,
    explicit: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Sequence -> split: from explicit lists when given, else seeded fractions.

    Splits are by sequence, never by frame, so no scene leaks from train into test.
    """
    if explicit:
        return explicit_splits(sequences, explicit)
    order = list(sequences)
    np.random.default_rng(seed).shuffle(order)
    total = sum(fractions[s] for s in SPLITS)
    counts = {s: int(round(len(order) * fractions[s] / total)) for s in ("val", "test")}
    for s in ("val", "test"):  # every split gets a sequence when there are enough
        if fractions[s] > 0 and counts[s] == 0 and len(order) >= 3:
            counts[s] = 1
    n_test, n_val = counts["test"], counts["val"]
    mapping = {}
    for i, seq in enumerate(order):
        mapping[seq] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return mapping


def explicit_splits(
    sequences: Sequence[str], explicit: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """Sequence -> split from the config's lists; a sequence in two lists would leak."""
    mapping: dict[str, str] = {}
    for split, names in explicit.items():
        for name in map(str, names):
            if mapping.get(name, split) != split:
                raise InputError(
                    SPLIT_KEY, f"sequence {name!r} is listed under both {mapping[name]} and {split}"
                )
            mapping[name] = split
    unknown = sorted(set(mapping) - set(sequences))
    if unknown:
        raise InputError(SPLIT_KEY, f"split lists name sequences not in the data: {unknown[:5]}")
    return mapping


def read_splits(
    root: Path,
    files: Sequence[Path],
    splits: Mapping[str, str],
    settings: Mapping[str, Any],
    policy: str,
    skips: Skips,
) -> dict[str, list[dict[str, Any]]]:
    """Rows per split, each file read once at its split's frame stride.

    Files are assigned to splits by their stem, before reading; rows carry ``info.seq_name``.
    So that a sequence cannot reach two splits under two files, each name may be claimed by
    one file only.
    """
    tables: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    claimed: dict[str, Path] = {}
    for path in tqdm(files, desc="index sequences", mininterval=5):
        split = splits.get(path.stem)
        if split is None:
            continue
        stride = settings["frame_stride"][split]
        name, rows = read_sequence(path, root, settings["distance"], policy, stride, skips)
        if name in claimed:
            raise InputError(path, f"sequence name {name!r} is also claimed by {claimed[name]}")
        claimed[name] = path
        tables[split].extend(r for r in rows if r["visibility"] >= settings["min_visibility"])
    return tables


def split_table(rows: list[dict[str, Any]], split: str, root: Path) -> pd.DataFrame:
    """One split's table; an empty split stops the stage before anything is written."""
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    if frame.empty:
        raise InputError(
            root,
            f"no valid objects in the {split} split "
            "(check split settings, frame_stride and min_visibility)",
        )
    return frame


def check_disjoint(tables: Mapping[str, pd.DataFrame], root: Path) -> None:
    """No sequence name in two splits: the guarantee the split is for, checked on the output."""
    owner: dict[str, str] = {}
    for split, table in tables.items():
        for name in table["sequence"].unique():
            if name in owner:
                raise InputError(
                    root, f"sequence {name!r} is in both the {owner[name]} and {split} splits"
                )
            owner[name] = split


def write_outputs(
    tables: Mapping[str, pd.DataFrame], outputs: Mapping[str, Path], skipped: Path, skips: Skips
) -> None:
    """Write all tables and the skip list to temporary files, renamed only once every one is
    written: a failure leaves no output at all."""
    with ExitStack() as stack:
        for split, table in tables.items():
            table.to_parquet(stack.enter_context(atomic_path(outputs[split])), index=False)
        stack.enter_context(atomic_path(skipped)).write_text(skips.to_tsv())


def build_index(
    root: Path,
    outputs: Mapping[str, Path],
    skipped_path: Path,
    settings: Mapping[str, Any],
    policy: str,
) -> dict[str, int]:
    """Read every sequence, filter by visibility, write one table per split + skipped.tsv.

    Everything is read and checked before the first file is written.
    """
    files = annotation_files(root)
    splits = assign_splits(
        [f.stem for f in files],
        settings["split_fractions"],
        settings["split_seed"],
        settings.get("split_sequences"),
    )
    skips = Skips()
    rows = read_splits(root, files, splits, settings, policy, skips)
    tables = {split: split_table(rows[split], split, root) for split in SPLITS}
    check_disjoint(tables, root)
    write_outputs(tables, outputs, skipped_path, skips)
    for split, table in tables.items():
        log.info(
            "%s: %d objects in %d frames of %d sequences",
            split,
            len(table),
            table.groupby(["sequence", "frame"]).ngroups,
            table["sequence"].nunique(),
        )
    log.info("skipped %d bad samples (listed in %s)", len(skips), skipped_path)
    return {split: len(table) for split, table in tables.items()}
