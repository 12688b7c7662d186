"""The dedup's bucket jobs (one per bucket): the later copies among one bucket's rows of every
group's hash table, by key (an earlier group has it) and by image (an earlier candidate has its
sha256), written to the bucket's table of later copies (workflow/flip/dedup.py says how the
stages fit together and why a bucket's memory is bounded).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.flip.dedup import (
    BATCH,
    BUCKETS_META,
    COUNTS_META,
    DUPLICATE_SCHEMA,
    FORMAT,
    FORMAT_META,
    HASH_SCHEMA,
    OUT_ROW_GROUP,
    SHARDS_META,
    fixed_rows,
    words,
)


@dataclass
class HashTable:
    """One group's hash table, opened: its shards, buckets and each bucket's row groups."""

    path: Path

    def __post_init__(self) -> None:
        try:
            # no pre-buffering: its cache of the ranges read lives as long as the reader, and
            # a bucket job keeps every group's reader open
            self.file = pq.ParquetFile(self.path, pre_buffer=False)
        except (OSError, pa.ArrowException) as err:
            raise InputError(self.path, f"not a readable hash table: {err}") from None
        meta = self.file.schema_arrow.metadata or {}
        if SHARDS_META in meta and meta.get(FORMAT_META) != FORMAT:
            raise InputError(self.path, "a hash table of an older format (rerun the hash stage)")
        if not self.file.schema_arrow.remove_metadata().equals(HASH_SCHEMA):
            raise InputError(self.path, f"not a hash table: columns {self.file.schema_arrow.names}")
        try:
            self.shards: list[str] = json.loads(meta[SHARDS_META])
            layout = json.loads(meta[BUCKETS_META])
            self.buckets, rows = int(layout["buckets"]), [int(n) for n in layout["rows"]]
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(self.path, f"not a hash table: metadata {err}") from None
        self.rows = rows
        self.groups = self._row_groups()

    def _row_groups(self) -> list[list[int]]:
        """Row groups of each bucket: a bucket's rows are consecutive row groups."""
        ends = np.cumsum(self.rows)
        meta = self.file.metadata
        if len(self.rows) != self.buckets or (ends[-1] if len(ends) else 0) != meta.num_rows:
            raise InputError(self.path, "not a hash table: its bucket rows do not add up")
        groups: list[list[int]] = [[] for _ in range(self.buckets)]
        start = 0
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if n:
                b = int(np.searchsorted(ends, start, "right"))
                if start + n > ends[b]:
                    raise InputError(self.path, f"not a hash table: row group {i} spans buckets")
                groups[b].append(i)
            start += n
        return groups

    def read_bucket(self, bucket: int, columns: list[str]) -> pa.Table:
        return self.file.read_row_groups(self.groups[bucket], columns=columns)


@dataclass
class BucketRows:
    """The rows of one bucket over every group, in (group, shard, position) order."""

    order: np.ndarray  # int64: global shard id << 32 | position
    hashes: np.ndarray | None  # (n, 2) uint64: the key hash
    sha: np.ndarray | None  # (n, 4) uint64: the sha256 (meaningless where not valid)
    valid: np.ndarray  # bool: a candidate
    starts: np.ndarray  # int64 (groups + 1): where each group's rows start


def read_bucket(tables: Sequence[HashTable], bucket: int, offsets: np.ndarray) -> BucketRows:
    """Bucket ``bucket`` of every group, into arrays allocated once."""
    counts = [t.rows[bucket] for t in tables]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(starts[-1])
    order = np.empty(n, np.int64)
    hashes = np.empty((n, 16), np.uint8)
    sha = np.empty((n, 32), np.uint8)
    valid = np.empty(n, bool)
    for g, t in enumerate(tables):
        a, b = starts[g], starts[g + 1]
        part = t.read_bucket(bucket, ["shard", "sample", "key_hash", "sha256"])
        if part.num_rows != b - a:
            raise InputError(t.path, "not a hash table: a bucket holds other rows than listed")
        shard = part["shard"].to_numpy().astype(np.int64) + offsets[g]
        order[a:b] = (shard << 32) | part["sample"].to_numpy()
        hashes[a:b] = fixed_rows(part["key_hash"], 16)
        sha[a:b] = fixed_rows(part["sha256"], 32)
        valid[a:b] = part["sha256"].is_valid().to_numpy(zero_copy_only=False)
        del part
    return BucketRows(order, words(hashes), words(sha), valid, starts)


def first_key_copies(tables: Sequence[HashTable], offsets: np.ndarray,
                     hashes: np.ndarray) -> np.ndarray:  # fmt: skip
    """Row -> the order (shard id << 32 | position) of the first row of every group with the
    same key hash, from the key hashes of every group streamed in batches; each row finds
    itself at the latest."""
    by_word = np.argsort(hashes[:, 0], kind="stable")
    sorted_word = hashes[by_word, 0]
    first = np.full(len(hashes), -1, np.int64)
    if not len(hashes):
        return first
    for g, t in enumerate(tables):
        columns = ["shard", "sample", "key_hash"]
        for batch in t.file.iter_batches(batch_size=BATCH, columns=columns):
            if not batch.num_rows:
                continue
            w = words(fixed_rows(batch.column(2), 16))
            by_query = np.argsort(w[:, 0])  # sorted queries: each search starts at the last
            query = w[by_query, 0]
            lo = np.searchsorted(sorted_word, query, "left")
            hit = np.flatnonzero(sorted_word[np.minimum(lo, len(sorted_word) - 1)] == query)
            if not len(hit):
                continue
            reps = np.searchsorted(sorted_word, query[hit], "right") - lo[hit]
            batch_row = np.repeat(by_query[hit], reps)
            within = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
            row = by_word[np.repeat(lo[hit], reps) + within]
            same = hashes[row, 1] == w[batch_row, 1]
            row, batch_row = row[same], batch_row[same]
            new = first[row] < 0  # groups come in order: the first found is the first copy
            row, batch_row = row[new], batch_row[new]
            shard = batch.column(0).to_numpy()[batch_row].astype(np.int64) + offsets[g]
            first[row] = (shard << 32) | batch.column(1).to_numpy()[batch_row]
    if (first < 0).any():
        raise InputError(tables[0].path, "hash tables changed while read (rerun the dedup stage)")
    return first


def later_image_copies(sha: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(later, first): the candidate rows whose sha256 an earlier candidate row has, and that
    earliest row. One stable sort on the first word; only rows sharing it are compared on
    all four words."""
    rows = np.flatnonzero(candidate)
    w0 = sha[rows, 0]
    by_word = np.argsort(w0, kind="stable")
    rows = rows[by_word]
    w0 = w0[by_word]
    del by_word
    same = w0[1:] == w0[:-1]
    shared = np.zeros(len(rows), bool)
    shared[1:] |= same
    shared[:-1] |= same
    rows = rows[shared]  # grouped by first word, in row order within each
    del w0, same, shared
    if not len(rows):
        return rows, rows
    s = sha[rows]
    by_sha = np.lexsort((s[:, 3], s[:, 2], s[:, 1], s[:, 0]))  # stable: row order kept
    rows, s = rows[by_sha], s[by_sha]
    later = np.zeros(len(rows), bool)
    later[1:] = (s[1:] == s[:-1]).all(axis=1)
    run = np.cumsum(~later) - 1
    return rows[later], rows[np.flatnonzero(~later)[run[later]]]


def find_later_copies(
    hash_files: Sequence[str | PathLike[str]], bucket: int, out: Path
) -> dict[str, int]:
    """Write bucket ``bucket``'s table of later copies from the groups' hash tables (in group
    order); return its counts: ``candidates``, ``images`` (distinct), ``later_copies``,
    ``across_groups`` (later copies whose first copy is in another group) and
    ``repeated_keys`` (keys an earlier group has)."""
    tables = [HashTable(Path(p)) for p in hash_files]
    if not tables:
        raise InputError("--hashes", "no hash tables given")
    buckets = tables[0].buckets
    for t in tables[1:]:
        if t.buckets != buckets:
            raise InputError(t.path, f"made with {t.buckets} buckets but {tables[0].path} "
                             f"with {buckets} (rerun the hash stage)")  # fmt: skip
    if not 0 <= bucket < buckets:
        raise InputError("--bucket", f"bucket {bucket}, but the hash tables have {buckets} "
                         "(filter.dedup_buckets changed: rerun the hash stage)")  # fmt: skip
    offsets = np.concatenate([[0], np.cumsum([len(t.shards) for t in tables])]).astype(np.int64)
    shards = [s for t in tables for s in t.shards]
    rows = read_bucket(tables, bucket, offsets)
    first_key = first_key_copies(tables, offsets, rows.hashes)
    rows.hashes = None  # each array is freed once used: the job holds its bucket's rows
    repeated = np.flatnonzero(first_key < rows.order)  # keys are unique within a group
    repeated_first = first_key[repeated]
    del first_key
    candidate = rows.valid  # no longer needed as it was
    candidate[repeated] = False
    later, origin = later_image_copies(rows.sha, candidate)
    rows.sha = None
    shards_before = offsets[1:-1]
    group_later = np.searchsorted(shards_before, rows.order[later] >> 32, "right")
    group_origin = np.searchsorted(shards_before, rows.order[origin] >> 32, "right")
    counts = {
        "candidates": int(candidate.sum()),
        "images": int(candidate.sum() - len(later)),
        "later_copies": int(len(later)),
        "across_groups": int((group_later != group_origin).sum()),
        "repeated_keys": int(len(repeated)),
    }
    table = _duplicates(tables, bucket, rows, shards, repeated, repeated_first, later, origin)
    meta = {
        SHARDS_META: json.dumps(shards).encode(),
        BUCKETS_META: json.dumps({"bucket": bucket, "buckets": buckets}).encode(),
        COUNTS_META: json.dumps(counts).encode(),
        FORMAT_META: FORMAT,
    }
    with atomic_path(out) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, row_group_size=OUT_ROW_GROUP)
    return counts


def _duplicates(tables: Sequence[HashTable], bucket: int, rows: BucketRows, shards: list[str],
                repeated: np.ndarray, repeated_first: np.ndarray, later: np.ndarray,
                origin: np.ndarray) -> pa.Table:  # fmt: skip
    """The later copies' table, sorted by (shard id, position)."""
    out = np.concatenate([repeated, later])
    first = np.concatenate([repeated_first, rows.order[origin]])
    origin = np.concatenate([repeated, origin])  # a repeated key's first copy: same key
    image = np.concatenate([np.zeros(len(repeated), bool), np.ones(len(later), bool)])
    sort = np.argsort(rows.order[out], kind="stable")
    out, first, origin, image = out[sort], first[sort], origin[sort], image[sort]
    keys = _keys(tables, bucket, rows.starts, np.concatenate([out, origin[image]]))
    own, origin_keys = keys[: len(out)], keys[len(out) :]  # an image's first copy: this bucket
    first_key = pc.if_else(pa.array(image), _spread(origin_keys, image), own)
    names = pa.array([Path(s).name for s in shards], pa.string())
    shard, first_shard = rows.order[out] >> 32, first >> 32
    return pa.table({
        "shard_id": pa.array(shard.astype(np.uint32)),
        "sample": pa.array((rows.order[out] & 0xFFFFFFFF).astype(np.uint32)),
        "shard": pa.array(shards, pa.string()).take(pa.array(shard)),
        "key": own,
        "reason": pa.array(["duplicate_key", "duplicate"]).take(pa.array(image.astype(np.int8))),
        "first": pc.binary_join_element_wise(names.take(pa.array(first_shard)), first_key, "/"),
        "first_shard_id": pa.array(first_shard.astype(np.uint32)),
        "first_sample": pa.array((first & 0xFFFFFFFF).astype(np.uint32)),
    }, schema=DUPLICATE_SCHEMA)  # fmt: skip


def _spread(values: pa.Array, where: np.ndarray) -> pa.Array:
    """``values`` placed, in order, at the rows where ``where`` holds (null elsewhere)."""
    index = np.full(len(where), -1, np.int64)
    index[where] = np.arange(int(where.sum()))
    return values.take(pa.array(index, mask=index < 0))


def _keys(tables: Sequence[HashTable], bucket: int, starts: np.ndarray,
          rows: np.ndarray) -> pa.Array:  # fmt: skip
    """The keys of bucket rows ``rows``, read group by group (only this bucket's row groups)."""
    by_row = np.argsort(rows, kind="stable")
    sorted_rows = rows[by_row]
    parts = []
    for g, t in enumerate(tables):
        lo, hi = np.searchsorted(sorted_rows, starts[g : g + 2])
        if hi > lo:
            keys = t.read_bucket(bucket, ["key"])["key"]
            parts.append(keys.take(pa.array(sorted_rows[lo:hi] - starts[g])))
    keys = pa.chunked_array(parts, pa.string()).combine_chunks()
    back = np.empty_like(by_row)
    back[by_row] = np.arange(len(by_row))
    return keys.take(pa.array(back))
