"""Duplicate images and keys across filter groups, in memory that a bucket count bounds.

The filter runs one job per shard group, so on its own it only sees the duplicates within its
group. LAION repeats images all over the dataset, so before the filter:

* ``hash_group`` (one job per group) lists every key of the group once, in shard order: the
  shard (its index in the group), the sample's position in its shard, a 128-bit hash of the
  key and, for a *candidate* (a sample whose key is new and whose metadata and caption pass
  ``check_text``), the sha256 of its image bytes. Each row goes to one of ``buckets`` by a
  hash prefix - a candidate by its sha256, any other row by its key hash - and each bucket
  is its own row groups of the group's table (``group0.parquet``).
* ``find_later_copies`` (one job per bucket) reads its bucket's rows of every group, finds
  those whose key an earlier group already has (streaming the key hashes of every group in
  batches, so only the bucket's own rows are held) and, among the other candidates, those
  whose image an earlier candidate has: every copy of an image has the same sha256, so all
  of them are in one bucket. The first copy is the one with the smallest (shard, position).
* each filter job reads its own shards' verdicts from every bucket's table
  (``read_later_copies``, a filter on integer shard ids that parquet statistics prune).

This is exactly the filter's own rules ("a key read before", "same image as a sample kept
earlier"): keys are checked first, and the image checks depend on the image bytes alone, so
the first candidate copy of an image is kept if and only if any copy would be.

Every array is fixed-width (uint32 ids, 16- and 32-byte hashes viewed as uint64 words): a
bucket job holds about 100 bytes per row of its bucket (tests/benchmarks/flip_dedup_benchmark.py
measures it), so ``filter.dedup_buckets`` sets the largest job.

The sha256 is computed from the image bytes in the tar, not taken from img2dataset's
``sha256`` column: img2dataset hashes the file it downloaded, before resizing and re-encoding
it (``compute_hash`` in its downloader.py), so the column names another image than the tar
holds whenever img2dataset resized it (LAION-400M's recipe resizes to 256 px), and the
filter's own duplicate check hashes the tar's bytes.

Files: per group, ``group0.parquet`` (``HASH_SCHEMA``; the group's shards, the bucket count
and the rows per bucket in its schema metadata); per bucket, ``bucket0.parquet`` in
``duplicates.parquet/`` (``DUPLICATE_SCHEMA``: one row per later copy with its reason and
first copy, sorted by shard id and position), with every hashed shard listed in its schema
metadata so the filter can check that it covers its shards (the same paths as the hash jobs
were given) and map its shards to their ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.flip.filter import Drop, check_key_name, check_text, filter_settings
from workflow.flip.layout import IMAGE_EXT
from workflow.flip.shards import read_samples, require_shards

log = logging.getLogger("lsai.flip.dedup")

HASH_SCHEMA = pa.schema([
    ("shard", pa.uint32()),  # index of the shard in its group
    ("sample", pa.uint32()),  # position of the sample in its shard (every sample counts)
    ("key_hash", pa.binary(16)),  # blake2b-128 of the key
    ("sha256", pa.binary(32)),  # of the image bytes; null: not a candidate
    ("key", pa.string()),
])  # fmt: skip
DUPLICATE_SCHEMA = pa.schema([
    ("shard_id", pa.uint32()), ("sample", pa.uint32()), ("shard", pa.string()),
    ("key", pa.string()), ("reason", pa.string()), ("first", pa.string()),
    ("first_shard_id", pa.uint32()), ("first_sample", pa.uint32()),
])  # fmt: skip
SHARDS_META = b"lsai_shards"
BUCKETS_META = b"lsai_buckets"
COUNTS_META = b"lsai_counts"
#: Format 3: integer ids, key hashes and buckets. Format 2 tables (shard path, key and sha256
#: of one whole-dataset job) cannot be read by the bucket jobs.
FORMAT_META, FORMAT = b"lsai_hash_format", b"3"
ROW_GROUP = 1 << 20  # rows per parquet row group of a hash table (at most)
BATCH = 1 << 20  # rows per batch when streaming key hashes
OUT_ROW_GROUP = 1 << 16  # rows per row group of a bucket's table: the filter's reads prune
MAX_BUCKETS = 1 << 15  # with the sentinel of unwritten rows, bucket numbers fit 16 bits


class Verdict(NamedTuple):
    """A later copy as the filter needs it: why it goes, where its first copy is ("shard
    name/key") and its own key (checked against the sample at that position)."""

    reason: str
    first: str
    key: str


def key_hash(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


class HashRows:
    """One group's hash rows, gathered shard by shard as fixed-width arrays (no Python
    object per sample outlives its shard)."""

    def __init__(self) -> None:
        self.parts: list[tuple] = []

    def add(self, shard: int, samples: Sequence[int], keys: list[str],
            shas: list[bytes | None]) -> None:  # fmt: skip
        """The listed samples of shard ``shard`` (positions, keys, sha256 or None)."""
        n = len(keys)
        hashes = np.frombuffer(b"".join(map(key_hash, keys)), np.uint8).reshape(n, 16)
        valid = np.fromiter((s is not None for s in shas), bool, n)
        sha = np.frombuffer(b"".join(s or bytes(32) for s in shas), np.uint8).reshape(n, 32)
        self.add_arrays(
            np.full(n, shard, np.uint32), np.asarray(samples, np.uint32), hashes, sha, valid,
            pa.array(keys, pa.string()),
        )  # fmt: skip

    def add_arrays(self, shard: np.ndarray, sample: np.ndarray, hashes: np.ndarray,
                   sha: np.ndarray, valid: np.ndarray, keys: pa.Array) -> None:  # fmt: skip
        self.parts.append((shard, sample, hashes, sha, valid, keys))

    def write(self, out: Path, shards: Sequence[str], buckets: int) -> int:
        """Write the table (each key once: its first row) to ``out``; return the candidates."""
        if not 1 <= buckets <= MAX_BUCKETS:
            raise InputError("dedup_buckets", f"{buckets} buckets (1 to {MAX_BUCKETS})")
        parts, self.parts = [list(p) for p in self.parts], []
        empty = (np.empty(0, np.uint32), np.empty(0, np.uint32), np.empty((0, 16), np.uint8),
                 np.empty((0, 32), np.uint8), np.empty(0, bool))  # fmt: skip
        columns = []
        for i in range(5):  # column by column, each shard's piece freed as it is copied
            columns.append(np.concatenate([p[i] for p in parts]) if parts else empty[i])
            for p in parts:
                p[i] = None
        shard, sample, hashes, sha, valid = columns
        keys = pa.chunked_array([p[5] for p in parts], pa.string())
        del parts, columns
        bucket = np.where(valid, prefix(sha), prefix(hashes)) % np.uint32(buckets)
        bucket[~first_occurrences(hashes)] = buckets  # a key repeated in the group: unwritten,
        perm = np.argsort(bucket.astype(np.uint16), kind="stable")  # its first; radix sort
        counts = np.bincount(bucket, minlength=buckets + 1)[:buckets]
        del bucket
        valid[perm[counts.sum() :]] = False
        meta = {
            SHARDS_META: json.dumps([str(p) for p in shards]).encode(),
            BUCKETS_META: json.dumps({"buckets": buckets, "rows": counts.tolist()}).encode(),
            FORMAT_META: FORMAT,
        }
        schema = HASH_SCHEMA.with_metadata(meta)
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            start = 0
            for n in counts:  # each bucket its own row groups: one write_table per bucket
                idx = perm[start : start + n]
                start += n
                table = pa.Table.from_arrays([
                    pa.array(shard[idx]), pa.array(sample[idx]),
                    fixed_array(hashes[idx], 16), fixed_array(sha[idx], 32, valid[idx]),
                    keys.take(pa.array(idx)),
                ], schema=schema)  # fmt: skip
                writer.write_table(table, row_group_size=ROW_GROUP)
        return int(valid.sum())


def hash_group(
    shards: Sequence[str | PathLike[str]],
    settings: Mapping[str, Any],
    out: Path,
    profile: str = "laion400m",
) -> int:
    """Write every key of ``shards`` (in order, each once) to ``out``, with the sha256 of the
    candidates, in ``settings["dedup_buckets"]`` buckets; return how many candidates. A
    sample whose key is no text is left out (the filter drops it whatever the other groups
    hold); a damaged shard file is an InputError."""
    s = filter_settings(settings, profile)
    require_shards(shards)
    rows = HashRows()
    for index, path in enumerate(map(Path, shards)):
        positions, keys, shas = [], [], []
        samples = read_samples(path)
        for position, (key, sample) in enumerate(
            tqdm(samples, desc=path.name, mininterval=5, leave=False)
        ):
            try:
                check_key_name(key)
            except Drop:
                continue
            positions.append(position)
            keys.append(key)
            shas.append(_candidate_hash(sample, s))
        rows.add(index, positions, keys, shas)
    return rows.write(Path(out), [str(p) for p in shards], int(s["dedup_buckets"]))


def _candidate_hash(sample: dict[str, bytes], s: dict[str, Any]) -> bytes | None:
    """The sha256 of the image of a sample whose metadata and caption pass, else None."""
    data = sample.get(IMAGE_EXT)
    try:
        check_text(sample, s)
    except Drop:
        return None
    return None if data is None else hashlib.sha256(data).digest()


# ------------------------------------------------------------------------ fixed-width helpers
def fixed_array(data: np.ndarray, width: int, valid: np.ndarray | None = None) -> pa.Array:
    """An arrow fixed_size_binary array of the rows of ``data`` ((n, width) uint8), null
    where ``valid`` is False; built from the buffers, no Python bytes per row."""
    n = len(data)
    mask = None
    if valid is not None and not valid.all():
        mask = pa.py_buffer(np.packbits(valid, bitorder="little"))
    payload = pa.py_buffer(np.ascontiguousarray(data, np.uint8))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [mask, payload])


def fixed_rows(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """(n, width) uint8 of a fixed_size_binary column (null rows hold whatever is there)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = np.zeros((sum(len(c) for c in chunks), width), np.uint8)
    start = 0
    for c in chunks:
        data = c.buffers()[1]
        if len(c) and data is not None:  # an all-null chunk may come without data
            out[start : start + len(c)] = np.frombuffer(
                data, np.uint8, len(c) * width, c.offset * width
            ).reshape(-1, width)
        start += len(c)
    return out


def words(rows: np.ndarray) -> np.ndarray:
    """(n, width) uint8 as (n, width / 8) uint64 words (a view when contiguous)."""
    return np.ascontiguousarray(rows).view("<u8")


def prefix(rows: np.ndarray) -> np.ndarray:
    """The first 4 bytes of each row as a big-endian integer (the bucket's hash prefix)."""
    head = np.ascontiguousarray(rows[:, :4])
    return head.view(">u4").ravel().astype(np.uint32)


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Mask of the rows whose 16-byte hash no earlier row has."""
    w = words(hashes)
    order = np.lexsort((w[:, 1], w[:, 0]))  # stable: equal hashes keep their row order
    s0, s1 = w[order, 0], w[order, 1]
    repeat = np.zeros(len(order), bool)
    repeat[1:] = (s0[1:] == s0[:-1]) & (s1[1:] == s1[:-1])
    keep = np.ones(len(order), bool)
    keep[order[repeat]] = False
    return keep


# ------------------------------------------------------------------------------ bucket jobs
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


# ------------------------------------------------------------------------------- the filter
def read_later_copies(
    paths: Sequence[str | PathLike[str]], shards: Sequence[str | PathLike[str]]
) -> dict[tuple[str, int], Verdict]:
    """(shard, position) -> its Verdict, for the later copies in ``shards``, from every
    bucket's table; an InputError when a path is not a bucket's table, a bucket is missing,
    or the tables were made from other shard paths."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("--duplicates", "no dedup tables given")
    listed, total, seen = None, 0, {}
    for path in paths:
        hashed, bucket, buckets = _bucket_meta(path)
        if listed is None:
            listed, total = hashed, buckets
        elif hashed != listed or buckets != total:
            raise InputError(path, f"made from other hash tables than {paths[0]} (rerun dedup)")
        if bucket in seen:
            raise InputError(path, f"bucket {bucket}'s table, as is {seen[bucket]}")
        seen[bucket] = path
    absent = sorted(set(range(total)) - set(seen))
    if absent:
        raise InputError(paths[0], f"bucket {absent[0]} of {total} not given (the filter "
                         "reads every bucket's table)")  # fmt: skip
    index = {s: i for i, s in enumerate(listed)}
    wanted = [str(s) for s in shards]
    missing = [s for s in wanted if s not in index]
    if missing:
        raise InputError(
            paths[0], f"made without shard {missing[0]} (hash and filter must get the same paths)"
        )
    ids = pa.array([index[s] for s in wanted], pa.uint32())
    verdicts: dict[tuple[str, int], Verdict] = {}
    for path in paths:
        try:
            table = pq.read_table(path, columns=["shard_id", "sample", "key", "reason", "first"],
                                  filters=pc.field("shard_id").isin(ids))  # fmt: skip
        except (OSError, pa.ArrowException) as err:
            raise InputError(path, f"not a dedup table (a bucket's table): {err}") from None
        columns = [table[c].to_pylist() for c in ("shard_id", "sample", "reason", "first", "key")]
        for shard, sample, reason, first, key in zip(*columns, strict=True):
            verdicts[(listed[shard], sample)] = Verdict(reason, first, key)
    return verdicts


def _bucket_meta(path: Path) -> tuple[list[str], int, int]:
    try:
        schema = pq.read_schema(path)
        meta = schema.metadata or {}
        layout = json.loads(meta[BUCKETS_META])
        if not schema.remove_metadata().equals(DUPLICATE_SCHEMA):
            raise ValueError(f"columns {schema.names}")
        return json.loads(meta[SHARDS_META]), int(layout["bucket"]), int(layout["buckets"])
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException) as err:
        raise InputError(path, f"not a dedup table (a bucket's table): {err}") from None
