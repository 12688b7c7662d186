"""Reading one img2dataset shard whole and checked: a tar that is complete (its end-of-archive
marker there, nothing after where tarfile stops), its members grouped into samples as
webdataset groups them, and the count and keys that ``NNNNN_stats.json`` and ``NNNNN.parquet``
beside it give (a tar cut at a member boundary and re-terminated reads as a good tar; only
these tell). Every problem is an InputError naming the file, raised before any sample."""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from workflow.common.errors import InputError
from workflow.flip.layout import index_files, split_member

log = logging.getLogger("lsai.flip.shards")

TAR_END = 1024  # a tar ends with two zero blocks of 512 bytes


def read_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample of one tar shard (members grouped by ``group_members``).

    A missing file, a file that is no tar, a truncated tar and a tar that disagrees with its
    img2dataset index files are InputErrors naming ``path``, raised before any sample.
    """
    if not path.is_file():
        raise InputError(path, "no such shard file")
    index = read_index(path)
    try:
        _check_end(path)
        with tarfile.open(path, "r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            _check_stop(path, tar.offset)
            samples = list(group_members((m.name, m) for m in members))
            check_index(path, [key for key, _ in samples], index)
            for key, sample in samples:
                yield key, {ext: _read(tar, member) for ext, member in sample.items()}
    except (tarfile.TarError, EOFError) as err:
        raise InputError(path, f"not a readable tar (truncated or corrupt): {err}") from None
    except OSError as err:
        raise InputError(path, f"cannot read: {err}") from None


def _check_end(path: Path) -> None:
    """A tar cut short mid-member lacks the two zero blocks that end an archive."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - TAR_END))
        tail = fh.read()
    if size < TAR_END or tail.strip(b"\0") or size % 512:
        raise InputError(path, "not a tar, or truncated (no end-of-archive marker)")


def _check_stop(path: Path, offset: int) -> None:
    """tarfile ends an archive, silently, at the first header it cannot read (past the first
    member) or at a zero block: whatever follows must be zeros, or members were lost."""
    with path.open("rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(1 << 20):
            if chunk.strip(b"\0"):
                raise InputError(path, f"the archive stops at byte {offset} (a zero or "
                                 "unreadable header) but data follows: members would be lost "
                                 "(corrupt, or tars joined)")  # fmt: skip


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    return fh.read() if fh else b""


def group_members(members: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {ext: item}) per sample from (member name, item) in tar order: consecutive
    members sharing the name up to the first dot, as webdataset groups them; a member whose
    extension the sample already has starts a new sample with the same key (webdataset stops
    there), so one sample written twice is two samples and the repeat a ``duplicate_key``."""
    key, sample = None, {}
    for name, item in members:
        k, ext = split_member(name)
        if sample and (k != key or ext in sample):
            yield key, sample
            sample = {}
        key, sample[ext] = k, item
    if sample:
        yield key, sample


def read_index(tar: Path) -> dict[Path, int | list[str]]:
    """What img2dataset's files beside ``tar`` say it holds, for those that exist: the
    ``_stats.json`` -> its ``successes``, the parquet -> the keys of its ``success`` rows, in
    order. A file that exists but cannot be read is an InputError naming it."""
    files = index_files(tar)
    index: dict[Path, int | list[str]] = {}
    if files["stats"].is_file():
        index[files["stats"]] = _successes(files["stats"])
    if files["parquet"].is_file():
        index[files["parquet"]] = _success_keys(files["parquet"])
    return index


def _successes(path: Path) -> int:
    try:
        stats = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        raise InputError(path, f"not a readable stats file: {err}") from None
    n = stats.get("successes") if isinstance(stats, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(path, f"no sample count: `successes` is {repr(n)[:40]}")
    return n


def _success_keys(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["key", "status"])
    except (OSError, pa.ArrowException) as err:
        raise InputError(path, f"not a readable shard parquet (key, status): {err}") from None
    keys, status = table["key"].to_pylist(), table["status"].to_pylist()
    return [str(k) for k, st in zip(keys, status, strict=True) if st == "success"]


def read_rows(tar: Path):  # -> pyarrow.Table | None
    """The ``success`` rows of img2dataset's parquet beside ``tar``, every column as typed
    there, in order (row i describes sample i once ``check_index`` passed); None without a
    parquet. A parquet that cannot be read is an InputError naming it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = index_files(tar)["parquet"]
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        return table.filter(pc.fill_null(pc.equal(table["status"], "success"), False))
    except (OSError, KeyError, pa.ArrowException) as err:
        raise InputError(path, f"not a readable shard parquet (key, status): {err}") from None


def check_index(tar: Path, keys: Sequence[str], index: Mapping[Path, int | list[str]]) -> None:
    """The tar holds the samples its index files list: as many as ``successes``, with the
    parquet's keys in its order. A mismatch is an InputError naming the tar."""
    for source, listed in index.items():
        if isinstance(listed, int):
            n, says = listed, f"{source.name} says {listed}"
        else:
            n, says = len(listed), f"{source.name} lists {len(listed)} successful ones"
        if len(keys) != n:
            raise InputError(tar, f"{len(keys)} samples but {says} (cut short and "
                             "re-terminated, or files of different runs?)")  # fmt: skip
        if isinstance(listed, list) and list(keys) != listed:
            i = next(i for i, (a, b) in enumerate(zip(keys, listed, strict=True)) if a != b)
            raise InputError(tar, f"sample {i} has key {printable(keys[i])} but {source.name} "
                             f"lists {printable(listed[i])} there")  # fmt: skip


def printable(text: str) -> str:
    """``text`` with its lone surrogates (undecodable bytes of a member name, ``\\udcxx``
    escapes in a JSON string) escaped: parquet stores UTF-8 only."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def require_shards(shards: Sequence[str | PathLike[str]]) -> None:
    """A missing shard stops a stage before any work (read_samples would stop it midway);
    shards without index files get one warning (not one per shard: a dataset of thousands
    written by another tool would drown the log)."""
    for path in shards:
        if not Path(path).is_file():
            raise InputError(path, "no such shard file")
    bare = [p for p in map(Path, shards) if not any(f.is_file() for f in index_files(p).values())]
    if bare:
        log.warning(
            "%d of %d shards have no img2dataset _stats.json or .parquet beside them (first: "
            "%s): a tar cut short and re-terminated cannot be told from a whole one there",
            len(bare), len(shards), bare[0],
        )  # fmt: skip
