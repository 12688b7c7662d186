#!/usr/bin/env python
"""FLIP dedup memory: peak RSS of the old one-job dedup against the bucket jobs, and of a hash job.

Writes ``--rows`` synthetic hash rows (``--samples-per-shard`` per shard, in ``--groups``
filter groups) with planted copies: ``--copies`` of the candidates repeat the image of an
earlier sample, ``--repeated-keys`` of the rows repeat the key of an earlier group's sample,
``--non-candidates`` have no image hash (their metadata failed). Each side then runs in a
child process of its own, whose peak resident memory (``VmHWM`` of /proc/self/status, read
by the child as it ends) is that child's alone:

* old - the dedup of one job over every group as it was before the bucket jobs (a copy of
  its algorithm is kept below as the baseline: string shard paths and keys, Arrow group-by);
* new - ``workflow.flip.dedup_buckets.find_later_copies`` for bucket 0 of ``--buckets`` (with 1, the
  one bucket holds every row, the per-row cost to project from);
* hash - ``HashRows`` of one group of ``--hash-rows`` samples (LAION: 1000 shards of
  10,000) written in ``--leonardo-buckets`` buckets, fed shard by shard as the hash stage
  feeds it (the tars are not read: their reading is per shard, not per row).

It prints the peak of each, their MB per million rows above an idle interpreter with the same
imports, the ratio, and the peak projected for ``--project-rows`` (LAION-400M: 41,408 shards
x 10,000) against ``--limit-gb``: the old job over all of them, a bucket job with
``--leonardo-buckets`` buckets, a hash job of one group. Both dedup sides must name the same
later copies (checked when the new side ran every bucket, i.e. ``--buckets 1``).

    python tests/benchmarks/flip_dedup_benchmark.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from workflow.flip.dedup_buckets import find_later_copies  # noqa: E402
from workflow.flip.dedup_hash import HashRows  # noqa: E402

LAION_SHARDS, LAION_SAMPLES, LAION_GROUP = 41_408, 10_000, 1000


# ------------------------------------------------------------- the old algorithm (baseline)
OLD_SCHEMA = pa.schema([("shard", pa.string()), ("key", pa.string()), ("sha256", pa.binary(32))])
OLD_SHARDS_META, OLD_FORMAT_META, OLD_FORMAT = b"lsai_shards", b"lsai_hash_format", b"2"


def old_find_later_copies(hash_files: Sequence[str | PathLike[str]], out: Path) -> dict[str, int]:
    """The dedup as one job over every group's table (format 2), as it was: every row's
    shard path and key as strings, first rows by Arrow group-by."""
    tables = [pq.read_table(p) for p in hash_files]
    group = np.concatenate([np.full(t.num_rows, g, np.int32) for g, t in enumerate(tables)])
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    n = table.num_rows
    table = table.append_column("row", pa.array(np.arange(n, dtype=np.int64)))
    key_first = _old_first_rows(table, "key", n)
    repeated = np.flatnonzero(key_first != np.arange(n))
    is_candidate = np.array(table["sha256"].is_valid().to_numpy(zero_copy_only=False), bool)
    is_candidate[repeated] = False
    candidates = table.filter(pa.array(is_candidate))
    sha_first = _old_first_rows(candidates, "sha256", n)
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
    counts = {
        "candidates": int(is_candidate.sum()),
        "images": int(is_candidate.sum() - len(later)),
        "later_copies": int(len(later)),
        "across_groups": int((group[later] != group[sha_first[later]]).sum()),
        "repeated_keys": int(len(repeated)),
    }
    pq.write_table(duplicates, out)
    return counts


def _old_first_rows(table: pa.Table, column: str, n: int) -> np.ndarray:
    firsts = table.group_by(column, use_threads=False).aggregate([("row", "min")])
    first = firsts["row_min"].to_numpy()
    first_of = np.full(n, -1, np.int64)
    first_of[first] = first
    later = np.flatnonzero(first_of[table["row"].to_numpy()] == -1)
    if len(later):
        joined = table.select([column, "row"]).take(pa.array(later)).join(firsts, column)
        first_of[joined["row"].to_numpy()] = joined["row_min"].to_numpy()
    return first_of


# ---------------------------------------------------------------------------- synthetic rows
@dataclass
class Synthetic:
    """Hash rows of a dataset: every sample of every shard listed (position = row in shard)."""

    key_id: np.ndarray  # int64: the key is its 9-digit number
    sha: np.ndarray  # (n, 32) uint8
    valid: np.ndarray  # bool: a candidate
    samples_per_shard: int
    groups: int

    @property
    def rows(self) -> int:
        return len(self.key_id)

    @property
    def shards(self) -> int:
        return -(-self.rows // self.samples_per_shard)

    def shard_path(self, shard: int) -> str:
        return f"/data/laion/{shard:05d}.tar"

    def group_shards(self) -> list[range]:
        per = -(-self.shards // self.groups)
        return [range(s, min(s + per, self.shards)) for s in range(0, self.shards, per)]

    def rows_of(self, shards: range) -> slice:
        return slice(shards.start * self.samples_per_shard,
                     min(shards.stop * self.samples_per_shard, self.rows))  # fmt: skip


def synthetic(rows: int, groups: int, samples_per_shard: int = LAION_SAMPLES,
              copies: float = 0.1, repeated_keys: float = 0.001, non_candidates: float = 0.1,
              seed: int = 0) -> Synthetic:  # fmt: skip
    """Random rows with planted image copies (of an earlier row's image) and keys repeated
    from an earlier group (each key at most once per group, as the hash stage lists them)."""
    rng = np.random.default_rng(seed)
    sha = rng.integers(0, 256, (rows, 32), np.uint8)
    copy = np.flatnonzero(rng.random(rows) < copies)
    copy = copy[copy > 0]
    sha[copy] = sha[(rng.random(len(copy)) * copy).astype(np.int64)]  # an earlier row's image
    valid = rng.random(rows) >= non_candidates
    key_id = np.arange(rows, dtype=np.int64)
    data = Synthetic(key_id, sha, valid, samples_per_shard, groups)
    original = np.ones(rows, bool)
    for shards in data.group_shards()[1:]:
        part = data.rows_of(shards)
        n = int((part.stop - part.start) * repeated_keys)
        pool = np.flatnonzero(original[: part.start])
        if n and len(pool):
            src = rng.choice(pool, min(n, len(pool)), replace=False)
            dst = part.start + rng.choice(part.stop - part.start, len(src), replace=False)
            key_id[dst] = key_id[src]
            original[dst] = False
    return data


def _keys(ids: np.ndarray) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), 9, "0")


def write_old_tables(data: Synthetic, folder: Path) -> list[Path]:
    """Format-2 tables (shard path, key, sha256 or null), one per group."""
    paths = []
    for g, shards in enumerate(data.group_shards()):
        part = data.rows_of(shards)
        shard = np.arange(part.start, part.stop) // data.samples_per_shard
        names = pa.array([data.shard_path(s) for s in shards], pa.string())
        sha = data.sha[part]
        table = pa.table({
            "shard": names.take(pa.array(shard - shards.start)),
            "key": _keys(data.key_id[part]),
            "sha256": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(32), len(sha),
                [pa.py_buffer(np.packbits(data.valid[part], bitorder="little")),
                 pa.py_buffer(np.ascontiguousarray(sha))],
            ),
        }, schema=OLD_SCHEMA)  # fmt: skip
        listed = json.dumps([data.shard_path(s) for s in shards]).encode()
        meta = {OLD_SHARDS_META: listed, OLD_FORMAT_META: OLD_FORMAT}
        paths.append(folder / f"old{g}.parquet")
        pq.write_table(table.replace_schema_metadata(meta), paths[-1])
    return paths


def fill_group(data: Synthetic, shards: range, rows: HashRows) -> None:
    """Feed one group's rows to ``rows`` shard by shard, as the hash stage does."""
    for index, shard in enumerate(shards):
        part = data.rows_of(range(shard, shard + 1))
        keys = _keys(data.key_id[part]).to_pylist()
        shas = [s.tobytes() if v else None for s, v in zip(data.sha[part], data.valid[part],
                                                            strict=True)]  # fmt: skip
        rows.add(index, range(len(keys)), keys, shas)


def write_new_tables(data: Synthetic, folder: Path, buckets: int) -> list[Path]:
    """The hash stage's tables (format 3), one per group."""
    paths = []
    for g, shards in enumerate(data.group_shards()):
        rows = HashRows()
        fill_group(data, shards, rows)
        paths.append(folder / f"group{g}.parquet")
        rows.write(paths[-1], [data.shard_path(s) for s in shards], buckets)
    return paths


# ------------------------------------------------------------------------------ the children
def child(args: argparse.Namespace) -> None:
    started = time.monotonic()
    data_dir = Path(args.data)
    result: dict = {}
    if args.side == "old":
        files = sorted(data_dir.glob("old*.parquet"), key=lambda p: int(p.stem[3:]))
        result = old_find_later_copies(files, data_dir / "old_duplicates.parquet")
    elif args.side == "new":
        files = sorted(data_dir.glob("group*.parquet"), key=lambda p: int(p.stem[5:]))
        result = find_later_copies(files, 0, data_dir / "new" / "bucket0.parquet")
    elif args.side == "hash":
        rows = HashRows()
        shards = -(-args.hash_rows // args.samples_per_shard)
        rng = np.random.default_rng(1)
        for shard in range(shards):  # random rows made shard by shard: no input held
            n = min(args.samples_per_shard, args.hash_rows - shard * args.samples_per_shard)
            keys = _keys(shard * args.samples_per_shard + np.arange(n)).to_pylist()
            sha = rng.integers(0, 256, (n, 32), np.uint8)
            valid = rng.random(n) >= args.non_candidates
            shas = [s.tobytes() if v else None for s, v in zip(sha, valid, strict=True)]
            rows.add(shard, range(n), keys, shas)
        names = [f"/data/laion/{i:05d}.tar" for i in range(shards)]
        result = {"candidates": rows.write(data_dir / "hash_job.parquet", names,
                                           args.leonardo_buckets)}  # fmt: skip
    result["seconds"] = time.monotonic() - started
    result["peak_kb"] = peak_kb()
    print(json.dumps(result))


def peak_kb() -> int:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss`` of the child as the
    parent sees it: Linux carries the parent's high-water mark over a fork and exec into it,
    and the parent held the synthetic rows."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(side: str, args: argparse.Namespace, data: Path, *extra: str) -> tuple[float, dict]:
    """(peak RSS in MB of that child alone, from its own VmHWM; what it printed)."""
    command = [sys.executable, __file__, "--child", side, "--data", str(data),
               "--samples-per-shard", str(args.samples_per_shard),
               "--hash-rows", str(args.hash_rows), "--copies", str(args.copies),
               "--repeated-keys", str(args.repeated_keys),
               "--non-candidates", str(args.non_candidates),
               "--leonardo-buckets", str(args.leonardo_buckets), *extra]  # fmt: skip
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode:
        sys.exit(f"error: the {side} side failed (exit {result.returncode})")
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    return printed["peak_kb"] / 1024, printed


def same_verdicts(old: Path, new: list[Path]) -> bool:
    columns = ["shard", "key", "reason", "first"]
    a = pq.read_table(old, columns=columns).to_pandas()
    b = pa.concat_tables([pq.read_table(p, columns=columns) for p in new]).to_pandas()
    a, b = (t.sort_values(columns).reset_index(drop=True) for t in (a, b))
    return a.equals(b)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="hash rows (samples)")
    parser.add_argument("--groups", type=int, default=10, help="filter groups of the rows")
    parser.add_argument("--samples-per-shard", type=int, default=LAION_SAMPLES)
    parser.add_argument(
        "--copies",
        type=float,
        default=0.1,
        help="fraction of rows that copy an earlier row's image",
    )
    parser.add_argument(
        "--repeated-keys",
        type=float,
        default=0.001,
        help="fraction of a group's rows that repeat an earlier group's key",
    )
    parser.add_argument(
        "--non-candidates", type=float, default=0.1, help="fraction of rows without an image hash"
    )
    parser.add_argument(
        "--buckets",
        type=int,
        default=1,
        help="buckets of the new side's tables; bucket 0 is measured",
    )
    parser.add_argument(
        "--leonardo-buckets",
        type=int,
        default=16,
        help="config/leonardo.yaml's filter.dedup_buckets (projection, hash job)",
    )
    parser.add_argument(
        "--hash-rows",
        type=int,
        default=LAION_GROUP * LAION_SAMPLES,
        help="rows of the measured hash job (LAION: 1000 shards x 10,000)",
    )
    parser.add_argument(
        "--project-rows",
        type=int,
        default=LAION_SHARDS * LAION_SAMPLES,
        help="rows of the projection (LAION-400M: 41,408 shards x 10,000)",
    )
    parser.add_argument("--limit-gb", type=float, default=8.0, help="target peak per job")
    parser.add_argument("--skip-old", action="store_true", help="leave the old side out")
    parser.add_argument("--child", choices=["idle", "old", "new", "hash"], dest="side",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "idle":
        print(json.dumps({"peak_kb": peak_kb()}))
        return
    if args.side:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="flip_dedup_bench_") as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        data = synthetic(args.rows, args.groups, args.samples_per_shard, args.copies,
                         args.repeated_keys, args.non_candidates)  # fmt: skip
        if not args.skip_old:
            write_old_tables(data, folder)
        write_new_tables(data, folder, args.buckets)
        m = args.rows / 1e6
        print(f"{args.rows:,} rows in {args.groups} groups ({data.shards:,} shards of "
              f"{args.samples_per_shard:,}); copies {args.copies:.1%}, repeated keys "
              f"{args.repeated_keys:.2%}, non-candidates {args.non_candidates:.0%} "
              f"(written in {time.monotonic() - started:.0f} s)")  # fmt: skip
        del data
        idle, _ = run_child("idle", args, folder)
        print(f"idle interpreter (numpy, pyarrow, workflow.flip.dedup): {idle:,.0f} MB")
        new_peak, new = run_child("new", args, folder)
        new_rate = (new_peak - idle) / (m / args.buckets)
        print(f"new, bucket 0 of {args.buckets} ({m / args.buckets:,.2f}M rows): peak "
              f"{new_peak:,.0f} MB, {new_rate:,.1f} MB per million rows of its bucket, "
              f"{new['seconds']:.0f} s; {new['later_copies']:,} later copies, "
              f"{new['repeated_keys']:,} repeated keys")  # fmt: skip
        old_rate = None
        if not args.skip_old:
            old_peak, old = run_child("old", args, folder)
            old_rate = (old_peak - idle) / m
            print(f"old, one job: peak {old_peak:,.0f} MB, {old_rate:,.1f} MB per million rows, "
                  f"{old['seconds']:.0f} s; {old['later_copies']:,} later copies, "
                  f"{old['repeated_keys']:,} repeated keys")  # fmt: skip
            print(f"ratio old / new per million rows: {old_rate / new_rate:.1f}x")
            if args.buckets == 1:
                same = same_verdicts(folder / "old_duplicates.parquet",
                                     [folder / "new" / "bucket0.parquet"])  # fmt: skip
                print(f"same later copies, reasons and first copies: {same}")
                if not same:
                    sys.exit("error: the old and new dedup disagree")
        hash_peak, hashed = run_child("hash", args, folder)
        hash_rate = (hash_peak - idle) / (args.hash_rows / 1e6)
        print(f"hash job, one group of {args.hash_rows:,} rows in {args.leonardo_buckets} "
              f"buckets: peak {hash_peak:,.0f} MB, {hash_rate:,.1f} MB per million rows, "
              f"{hashed['seconds']:.0f} s")  # fmt: skip

    p = args.project_rows
    per_bucket = p / args.leonardo_buckets
    group_rows = LAION_GROUP * LAION_SAMPLES
    gb = 1024
    print(f"projected peak for {p:,} rows ({p / LAION_SAMPLES:,.0f} shards x "
          f"{LAION_SAMPLES:,}), target <= {args.limit_gb:g} GB per job:")  # fmt: skip
    projections = []
    if old_rate is not None:
        old_gb = (idle + old_rate * p / 1e6) / gb
        print(f"  old, one dedup job over every row: {old_gb:,.1f} GB")
    new_gb = (idle + new_rate * per_bucket / 1e6) / gb
    projections.append(new_gb)
    print(f"  new, each of {args.leonardo_buckets} bucket jobs ({per_bucket / 1e6:,.1f}M rows): "
          f"{new_gb:,.1f} GB")  # fmt: skip
    hash_gb = (idle + hash_rate * group_rows / 1e6) / gb
    projections.append(hash_gb)
    print(f"  hash job, {LAION_GROUP} shards x {LAION_SAMPLES:,} = {group_rows / 1e6:.0f}M rows: "
          f"{hash_gb:,.1f} GB (tar reading, one shard at a time, not included)")  # fmt: skip
    fits = max(projections) <= args.limit_gb
    print(f"  every new job within {args.limit_gb:g} GB: {'yes' if fits else 'NO'}")


if __name__ == "__main__":
    main()
