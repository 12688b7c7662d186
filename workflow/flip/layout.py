"""The img2dataset webdataset layout, in code, so the demo writer, the filter and the tests
agree on one set of names.

A folder of shards ``00000.tar, 00001.tar, ...``; each tar holds per sample ``KEY.jpg`` (the
image bytes), ``KEY.txt`` (the caption, UTF-8) and ``KEY.json`` (the metadata of
``JSON_FIELDS``), members of one sample next to each other. Beside each tar,
``00000.parquet`` (one row per sample, ``PARQUET_COLUMNS``) and ``00000_stats.json``
(``STATS_FIELDS``). Keys are 9 digits, unique over the whole dataset.

img2dataset's parquet has a row per *attempted* sample, failed downloads included (``status``
other than ``success``), and ``successes`` in ``_stats.json`` counts the samples of the tar:
together they say which samples the tar must hold (``index_files``, and the filter's check).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

#: img2dataset's default shard size (LAION-400M shards hold 10,000 samples).
SAMPLES_PER_SHARD = 10000
KEY_DIGITS = 9
SHARD_DIGITS = 5
#: The members of one sample, by extension.
IMAGE_EXT, CAPTION_EXT, META_EXT = "jpg", "txt", "json"
SAMPLE_EXTS = (IMAGE_EXT, CAPTION_EXT, META_EXT)
#: ``KEY.json`` fields: img2dataset's own plus the LAION columns it was told to keep.
JSON_FIELDS = (
    "url", "caption", "key", "status", "width", "height", "original_width", "original_height",
    "sha256", "NSFW", "similarity", "LICENSE",
)  # fmt: skip
#: Columns of the per-shard parquet (the same fields, key first as img2dataset writes them).
PARQUET_COLUMNS = (
    "key", "url", "caption", "status", "width", "height", "original_width", "original_height",
    "sha256", "NSFW", "similarity", "LICENSE",
)  # fmt: skip
#: The simple part of img2dataset's ``_stats.json``.
STATS_FIELDS = (
    "count", "successes", "failed_to_download", "failed_to_resize", "duration", "status_dict",
)  # fmt: skip
#: LAION's NSFW tags.
NSFW_TAGS = ("UNLIKELY", "UNSURE", "NSFW")
SHARD_RE = re.compile(rf"^(\d{{{SHARD_DIGITS}}})(\.tar|\.parquet|_stats\.json)$")


def sample_key(shard: int, index: int, samples_per_shard: int = SAMPLES_PER_SHARD) -> str:
    """The 9-digit key of sample ``index`` of shard ``shard`` (img2dataset numbering)."""
    return f"{shard * samples_per_shard + index:0{KEY_DIGITS}d}"


def shard_stem(shard: int) -> str:
    return f"{shard:0{SHARD_DIGITS}d}"


def shard_files(folder: Path, shard: int) -> dict[str, Path]:
    """The three files of shard ``shard``: ``tar``, ``parquet`` and ``stats``."""
    tar = folder / f"{shard_stem(shard)}.tar"
    return {"tar": tar, **index_files(tar)}


def index_files(tar: Path) -> dict[str, Path]:
    """The ``parquet`` and ``stats`` files img2dataset writes beside shard ``tar``."""
    stem = tar.name.removesuffix(".tar")
    return {
        "parquet": tar.with_name(f"{stem}.parquet"),
        "stats": tar.with_name(f"{stem}_stats.json"),
    }


def list_shards(folder: Path) -> list[Path]:
    """The ``*.tar`` shards of ``folder`` in shard order."""
    return sorted(p for p in folder.glob("*.tar") if SHARD_RE.match(p.name))


def split_member(name: str) -> tuple[str, str]:
    """``dir/KEY.ext`` -> (``dir/KEY``, ``ext``): the key ends at the basename's first dot,
    as webdataset groups members."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


#: The parquet columns that are not strings.
INT_COLUMNS = ("width", "height", "original_width", "original_height")
FLOAT_COLUMNS = ("similarity",)


def _cell(column: str, value: object) -> object:
    """``value`` if it fits ``column``'s type, else None: a sample's ``KEY.json`` passes
    through the tar as it is, but a field of the wrong type (a string width, a 400-digit
    similarity) must not make its shard's parquet unwritable."""
    if isinstance(value, bool):
        return None
    if column in INT_COLUMNS:
        return value if isinstance(value, int) and -(2**63) <= value < 2**63 else None
    if column in FLOAT_COLUMNS:
        return as_float(value)
    return value if is_text(value) else None


def as_float(value: object) -> float | None:
    """A JSON number as a float (NaN and infinities included), else None: not a number, a
    boolean, or an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def is_text(value: object) -> bool:
    """A string that encodes as UTF-8, which parquet and tar names need (no lone surrogates,
    which tarfile and json make of undecodable bytes and ``\\udcxx`` escapes)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parquet_row(meta: dict) -> dict:
    """The parquet row of one sample's ``KEY.json`` (missing fields, and values that do not
    fit their column, as None)."""
    return {c: _cell(c, meta.get(c)) for c in PARQUET_COLUMNS}


def parquet_schema():  # -> pyarrow.Schema; typed so that an empty shard still has its columns
    import pyarrow as pa

    types = {**dict.fromkeys(INT_COLUMNS, pa.int64()), **dict.fromkeys(FLOAT_COLUMNS, pa.float64())}
    return pa.schema([(c, types.get(c, pa.string())) for c in PARQUET_COLUMNS])


def write_parquet(path: Path, rows: list[dict]) -> None:
    """One row per sample of a shard, in tar order (written to ``path`` as is: callers pass
    a temporary path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    columns = {c: [r.get(c) for r in rows] for c in PARQUET_COLUMNS}
    pq.write_table(pa.table(columns, schema=schema), path)


@functools.cache
def expand_shards(pattern: str) -> tuple[str, ...]:
    """The shard paths of a dataset's ``shards`` (webdataset's brace notation, e.g.
    ``/data/laion/{00000..41407}.tar``), expanded once per pattern: the rules ask for every
    filter, pre-training and tuning job."""
    from braceexpand import braceexpand

    return tuple(braceexpand(pattern))


def shard_groups(shards: Sequence[str], per_group: int) -> list[list[str]]:
    """Consecutive groups of ``per_group`` shards: one filter job each, fixed by the config
    alone so a dry-run shows every job."""
    if per_group < 1:
        raise ValueError(f"shards_per_group must be >= 1, got {per_group}")
    return [list(shards[i : i + per_group]) for i in range(0, len(shards), per_group)]
