"""The dedup's hash stage (one job per filter group): every key of the group once, with the
sha256 of each candidate's image, written to the group's table in buckets (workflow/flip/dedup.py
says how the stages fit together and what the table holds).

Apart from the bucket jobs: a hash job reads the tars and applies the filter's key and text
checks (workflow/flip/filter_checks.py), which a bucket job never needs.
"""

from __future__ import annotations

import hashlib
import json
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
from workflow.flip.dedup import (
    BUCKETS_META,
    FORMAT,
    FORMAT_META,
    HASH_SCHEMA,
    MAX_BUCKETS,
    ROW_GROUP,
    SHARDS_META,
    first_occurrences,
    fixed_array,
    prefix,
)
from workflow.flip.filter_checks import Drop, check_key_name, check_text, filter_settings
from workflow.flip.layout import IMAGE_EXT
from workflow.flip.shards import read_samples, require_shards


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
