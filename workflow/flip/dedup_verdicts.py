"""The filter's side of the dedup: the later copies among a filter job's own shards, read
from every bucket's table (workflow/flip/dedup.py says how the stages fit together), as the
verdicts ``filter_shards`` takes.

Apart from the bucket jobs: a filter job only reads their tables, pruned by shard id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workflow.common.errors import InputError
from workflow.flip.dedup import BUCKETS_META, DUPLICATE_SCHEMA, SHARDS_META


class Verdict(NamedTuple):
    """A later copy as the filter needs it: why it goes, where its first copy is ("shard
    name/key") and its own key (checked against the sample at that position)."""

    reason: str
    first: str
    key: str


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
