"""Duplicate images and keys across filter groups: the filter runs one job per shard group,
so on its own it only sees the duplicates within its group. LAION repeats images all over the
dataset, so before the filter a cheap pass per group (``hash_group``) lists every key of the
group once, with the sha256 of every *candidate*: a sample whose key is new and whose
metadata and caption pass (``check_text``); one job over all groups (``find_later_copies``)
then names every key an earlier group already had (the filter drops those as
``duplicate_key``) and, among the other candidates, every one whose image a candidate in an
earlier shard already has (dropped as ``duplicate``).

This is exactly the filter's own rules ("a key read before", "same image as a sample kept
earlier"): keys are checked first, and the image checks depend on the image bytes alone, so
the first candidate copy of an image is kept if and only if any copy would be.

Files: per group, ``group0.parquet`` (shard, key, sha256 as 32 bytes or null for a sample
that is no candidate, in shard order; a key at most once); over all, ``duplicates.parquet``
(shard, key, reason, first: the shard/key of the first copy), with the hashed shards listed
in its schema metadata so the filter can check that it covers its shards (the same paths as
the hash jobs were given).
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
from workflow.flip.filter import DEFAULTS, Drop, check_key, check_text
from workflow.flip.layout import IMAGE_EXT
from workflow.flip.shards import read_samples, require_shards

log = logging.getLogger("lsai.flip.dedup")

HASH_SCHEMA = pa.schema([("shard", pa.string()), ("key", pa.string()), ("sha256", pa.binary(32))])
SHARDS_META = b"lsai_shards"
#: Hash tables list every key (non-candidates with a null sha256) since format 2; a table of
#: an older run lists candidates only and would miss keys repeated across groups.
FORMAT_META, FORMAT = b"lsai_hash_format", b"2"
COLUMNS = ("shard", "key", "reason", "first")  # of duplicates.parquet


def hash_group(
    shards: Sequence[str | PathLike[str]], settings: Mapping[str, Any], out: Path
) -> int:
    """Write every key of ``shards`` (in order, each once) to ``out``, with the sha256 of the
    candidates; return how many candidates. A sample whose key is no text is left out (the
    filter drops it whatever the other groups hold); a damaged shard file is an InputError."""
    s = {**DEFAULTS, **dict(settings)}
    rows: dict[str, list] = {"shard": [], "key": [], "sha256": []}
    seen: dict[str, str] = {}
    require_shards(shards)
    for path in map(Path, shards):
        for key, sample in tqdm(read_samples(path), desc=path.name, mininterval=5, leave=False):
            try:
                check_key(key, path.name, seen, None)
            except Drop:
                continue  # no text, or listed already (its first copy's row stands)
            rows["shard"].append(str(path))
            rows["key"].append(key)
            rows["sha256"].append(_candidate_hash(sample, s))
    table = pa.table(rows, schema=HASH_SCHEMA)
    meta = {SHARDS_META: json.dumps([str(p) for p in shards]).encode(), FORMAT_META: FORMAT}
    with atomic_path(out) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return len(rows["key"]) - rows["sha256"].count(None)


def _candidate_hash(sample: dict[str, bytes], s: dict[str, Any]) -> bytes | None:
    """The sha256 of the image of a sample whose metadata and caption pass, else None."""
    data = sample.get(IMAGE_EXT)
    try:
        check_text(sample, s)
    except Drop:
        return None
    return None if data is None else hashlib.sha256(data).digest()


def _read_hashes(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(path, f"not a readable hash table: {err}") from None
    meta = table.schema.metadata or {}
    if not table.schema.equals(HASH_SCHEMA) or SHARDS_META not in meta:
        raise InputError(path, f"not a hash table: columns {table.schema.names}")
    if meta.get(FORMAT_META) != FORMAT:
        raise InputError(path, "a hash table of an older format (rerun the hash stage)")
    return table


def find_later_copies(hash_files: Sequence[str | PathLike[str]], out: Path) -> dict[str, int]:
    """Write ``duplicates.parquet`` from the groups' hash tables (in group order); return
    counts: ``candidates``, ``images`` (distinct), ``later_copies``, ``across_groups`` (later
    copies whose first copy is in another group) and ``repeated_keys``."""
    tables = [_read_hashes(Path(p)) for p in hash_files]
    if not tables:
        raise InputError("hash_files", "no hash tables given")
    group = np.concatenate([np.full(t.num_rows, g, np.int32) for g, t in enumerate(tables)])
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    n = table.num_rows
    table = table.append_column("row", pa.array(np.arange(n, dtype=np.int64)))
    key_first = _first_rows(table, "key", n)  # a group lists a key once: repeats are across
    repeated = np.flatnonzero(key_first != np.arange(n))
    is_candidate = np.array(table["sha256"].is_valid().to_numpy(zero_copy_only=False), bool)
    is_candidate[repeated] = False
    candidates = table.filter(pa.array(is_candidate))
    sha_first = _first_rows(candidates, "sha256", n)
    later = np.flatnonzero(is_candidate & (sha_first != np.arange(n)))
    rows = np.concatenate([repeated, later])
    origin = np.concatenate([key_first[repeated], sha_first[later]])
    shard, key = (table[c].to_numpy(zero_copy_only=False) for c in ("shard", "key"))
    duplicates = pa.table({
        "shard": shard[rows].tolist(),
        "key": key[rows].tolist(),
        "reason": ["duplicate_key"] * len(repeated) + ["duplicate"] * len(later),
        "first": [f"{Path(shard[r]).name}/{key[r]}" for r in origin],
    })  # fmt: skip
    shards = [s for t in tables for s in json.loads(t.schema.metadata[SHARDS_META])]
    counts = {
        "candidates": int(is_candidate.sum()),
        "images": int(is_candidate.sum() - len(later)),
        "later_copies": int(len(later)),
        "across_groups": int((group[later] != group[sha_first[later]]).sum()),
        "repeated_keys": int(len(repeated)),
    }
    meta = {SHARDS_META: json.dumps(shards).encode(), b"lsai_counts": json.dumps(counts).encode()}
    with atomic_path(out) as tmp:
        pq.write_table(duplicates.replace_schema_metadata(meta), tmp)
    return counts


def _first_rows(table: pa.Table, column: str, n: int) -> np.ndarray:
    """Row -> the first row with the same ``column`` value (no nulls), by ``table``'s ``row``
    numbers (of a table of ``n`` rows; -1 for the rows ``table`` lacks). Only the rows that
    are not a first are joined: most are, and the tables of a whole dataset are large."""
    firsts = table.group_by(column, use_threads=False).aggregate([("row", "min")])
    first = firsts["row_min"].to_numpy()
    first_of = np.full(n, -1, np.int64)
    first_of[first] = first
    later = np.flatnonzero(first_of[table["row"].to_numpy()] == -1)  # positions in ``table``
    if len(later):
        joined = table.select([column, "row"]).take(pa.array(later)).join(firsts, column)
        first_of[joined["row"].to_numpy()] = joined["row_min"].to_numpy()
    return first_of


def read_later_copies(
    path: str | PathLike[str], shards: Sequence[str | PathLike[str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(shard, key) -> (reason, first copy), for the later copies in ``shards``; an
    InputError when ``path`` is not a dedup table or was made from other shard paths."""
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
    try:
        table = pq.read_table(path, columns=list(COLUMNS), filters=[("shard", "in", wanted)])
    except (OSError, pa.ArrowException) as err:
        raise InputError(path, f"not a dedup table (duplicates.parquet): {err}") from None
    shard, key, reason, first = (table[c].to_pylist() for c in COLUMNS)
    return {(s, k): (r, f) for s, k, r, f in zip(shard, key, reason, first, strict=True)}
