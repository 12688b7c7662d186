"""Duplicate images across filter groups: the filter runs one job per shard group, so on its
own it only sees the duplicates within its group. LAION repeats images all over the dataset,
so before the filter a cheap pass per group (``hash_group``) lists the sha256 of every
*candidate*, a sample whose metadata and caption pass (``check_text``); one job over all
groups (``find_later_copies``) then names every candidate whose image a candidate in an
earlier shard already has, and each filter job drops those as ``duplicate``.

This is exactly the filter's own rule ("same image as a sample kept earlier"): the image
checks depend on the image bytes alone, so the first candidate copy of an image is kept if
and only if any copy would be.

Files: per group, ``group0.parquet`` (shard, key, sha256 as 32 bytes, in shard order);
over all, ``duplicates.parquet`` (shard, key, first: the shard/key of the first copy), with
the hashed shards listed in its schema metadata so the filter can check that it covers its
shards (the same paths as the hash jobs were given).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.flip.filter import DEFAULTS, Drop, check_text, read_samples, require_shards
from workflow.flip.layout import IMAGE_EXT

log = logging.getLogger("lsai.flip.dedup")

HASH_SCHEMA = pa.schema([("shard", pa.string()), ("key", pa.string()), ("sha256", pa.binary(32))])
SHARDS_META = b"lsai_shards"


def hash_group(
    shards: Sequence[str | PathLike[str]], settings: Mapping[str, Any], out: Path
) -> int:
    """Write the candidates of ``shards`` (in order) to ``out``; return how many. A damaged
    sample is no candidate (the filter counts it); a damaged shard file is an InputError."""
    s = {**DEFAULTS, **dict(settings)}
    rows: dict[str, list] = {"shard": [], "key": [], "sha256": []}
    require_shards(shards)
    for path in map(Path, shards):
        for key, sample in tqdm(read_samples(path), desc=path.name, mininterval=5, leave=False):
            data = sample.get(IMAGE_EXT)
            try:
                check_text(sample, s)
            except Drop:
                continue
            if data is None:
                continue
            rows["shard"].append(str(path))
            rows["key"].append(key)
            rows["sha256"].append(hashlib.sha256(data).digest())
    table = pa.table(rows, schema=HASH_SCHEMA)
    shard_list = json.dumps([str(p) for p in shards]).encode()
    with atomic_path(out) as tmp:
        pq.write_table(table.replace_schema_metadata({SHARDS_META: shard_list}), tmp)
    return len(rows["key"])


def _read_hashes(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(path, f"not a readable hash table: {err}") from None
    if not table.schema.equals(HASH_SCHEMA) or SHARDS_META not in (table.schema.metadata or {}):
        raise InputError(path, f"not a hash table: columns {table.schema.names}")
    return table


def find_later_copies(hash_files: Sequence[str | PathLike[str]], out: Path) -> dict[str, int]:
    """Write ``duplicates.parquet`` from the groups' hash tables (in group order); return
    counts: ``candidates``, ``images`` (distinct), ``later_copies`` and ``across_groups``
    (later copies whose first copy is in another group)."""
    tables = [_read_hashes(Path(p)) for p in hash_files]
    if not tables:
        raise InputError("hash_files", "no hash tables given")
    group = np.concatenate([np.full(t.num_rows, g, np.int32) for g, t in enumerate(tables)])
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    n = table.num_rows
    table = table.append_column("row", pa.array(np.arange(n, dtype=np.int64)))
    first_rows = table.group_by("sha256", use_threads=False).aggregate([("row", "min")])
    first = first_rows["row_min"].to_numpy()
    is_first = np.zeros(n, bool)
    is_first[first] = True
    first_of = np.empty(n, np.int64)  # row -> the row of its image's first copy
    later = np.flatnonzero(~is_first)
    if len(later):
        joined = (
            table.select(["sha256", "row"]).take(pa.array(later))
            .join(first_rows, "sha256").sort_by("row")
        )  # fmt: skip
        first_of[joined["row"].to_numpy()] = joined["row_min"].to_numpy()
    shard, key = (
        table["shard"].to_numpy(zero_copy_only=False),
        table["key"].to_numpy(zero_copy_only=False),
    )
    origin = first_of[later]
    duplicates = pa.table({
        "shard": shard[later].tolist(),
        "key": key[later].tolist(),
        "first": [f"{Path(shard[r]).name}/{key[r]}" for r in origin],
    })  # fmt: skip
    shards = [s for t in tables for s in json.loads(t.schema.metadata[SHARDS_META])]
    counts = {
        "candidates": int(n),
        "images": int(len(first)),
        "later_copies": int(len(later)),
        "across_groups": int((group[later] != group[origin]).sum()),
    }
    meta = {SHARDS_META: json.dumps(shards).encode(), b"lsai_counts": json.dumps(counts).encode()}
    with atomic_path(out) as tmp:
        pq.write_table(duplicates.replace_schema_metadata(meta), tmp)
    return counts


def read_later_copies(
    path: str | PathLike[str], shards: Sequence[str | PathLike[str]]
) -> dict[tuple[str, str], str]:
    """(shard, key) -> first copy, for the later copies in ``shards``; an InputError when
    ``path`` is not a dedup table or was made from other shard paths."""
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
        hashed = set(json.loads(meta[SHARDS_META]))
    except (OSError, KeyError, ValueError, pa.ArrowException) as err:
        raise InputError(path, f"not a dedup table (duplicates.parquet): {err}") from None
    wanted = [str(s) for s in shards]
    missing = [s for s in wanted if s not in hashed]
    if missing:
        raise InputError(
            path, f"made without shard {missing[0]} (hash and filter must get the same paths)"
        )
    table = pq.read_table(path, filters=[("shard", "in", wanted)])
    shard, key, first = (table[c].to_pylist() for c in ("shard", "key", "first"))
    return {(s, k): f for s, k, f in zip(shard, key, first, strict=True)}
