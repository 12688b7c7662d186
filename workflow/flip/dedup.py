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

This module holds what the three jobs share: the tables' format (schemas, metadata keys,
row-group sizes) and the fixed-width array helpers. The jobs are ``hash_group`` in
workflow/flip/dedup_hash.py, ``find_later_copies`` in workflow/flip/dedup_buckets.py and
``read_later_copies`` in workflow/flip/dedup_verdicts.py.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
