"""``distance_index``: annotations -> one Parquet table of valid objects per split."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from workflow.common.atomic import atomic_path, write_text
from workflow.common.errors import InputError, Skips
from workflow.distance.motsynth import ROW_COLUMNS, read_sequence

log = logging.getLogger("lsai.distance.index")
SPLITS = ("train", "val", "test")


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
        mapping = {str(s): split for split, seqs in explicit.items() for s in seqs}
        unknown = sorted(set(mapping) - set(sequences))
        if unknown:
            raise InputError("config", f"split lists name sequences not in the data: {unknown[:5]}")
        return mapping
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


def build_index(
    root: Path,
    outputs: Mapping[str, Path],
    skipped_path: Path,
    settings: Mapping[str, Any],
    policy: str,
) -> dict[str, int]:
    """Read every sequence, filter by visibility, write one table per split + skipped.tsv."""
    files = annotation_files(root)
    splits = assign_splits(
        [f.stem for f in files],
        settings["split_fractions"],
        settings["split_seed"],
        settings.get("split_sequences"),
    )
    strides = settings["frame_stride"]
    skips = Skips()
    tables: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for path in tqdm(files, desc="index sequences", mininterval=5):
        split = splits.get(path.stem)
        if split is None:
            continue
        rows = read_sequence(path, root, settings["distance"], policy, strides[split], skips)
        tables[split].extend(r for r in rows if r["visibility"] >= settings["min_visibility"])
    counts = {}
    for split in SPLITS:
        frame = pd.DataFrame(tables[split], columns=list(ROW_COLUMNS))
        if frame.empty:
            raise InputError(
                root,
                f"no valid objects in the {split} split "
                "(check split settings, frame_stride and min_visibility)",
            )
        with atomic_path(outputs[split]) as tmp:
            frame.to_parquet(tmp, index=False)
        counts[split] = len(frame)
        log.info(
            "%s: %d objects in %d frames of %d sequences",
            split,
            len(frame),
            frame.groupby(["sequence", "frame"]).ngroups,
            frame["sequence"].nunique(),
        )
    write_text(skipped_path, skips.to_tsv())
    log.info("skipped %d bad samples (listed in %s)", len(skips), skipped_path)
    return counts
