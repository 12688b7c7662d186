"""The filter's output shards: each kept sample into an img2dataset-layout shard (``.tar``,
``.parquet`` with every column of its input row, ``_stats.json``), all under temporary names
until the stage commits them.

Apart from the rules (workflow/flip/filter_checks.py): what is written does not depend on why
a sample was kept.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workflow.common.atomic import write_json
from workflow.flip.layout import (
    PARQUET_COLUMNS,
    SHARD_RE,
    is_text,
    parquet_row,
    parquet_schema,
    shard_files,
)

#: A kept sample's input row: (its shard's parquet rows, the row's index), else its KEY.json.
InputRow = tuple[pa.Table, int] | dict


def output_rows(rows: list[InputRow], keys: list[str]) -> pa.Table:
    """The output parquet of one shard: each sample's input row with every column (a shard's
    parquet row as it is typed there; a KEY.json's layout fields as the layout types them and
    its other fields as arrow infers them), the tar's key and status ``success`` (the row
    describes the tar's sample, whatever its input said). Columns whose types disagree
    between input shards become text."""
    pieces: list[pa.Table] = []
    run: list = []
    for row in [*rows, None]:  # consecutive rows of one source are taken at once
        same = bool(run) and row is not None and type(row) is type(run[0]) and (
            isinstance(row, dict) or row[0] is run[0][0]
        )  # fmt: skip
        if run and not same:
            if isinstance(run[0], dict):
                pieces.append(_json_rows(run))
            else:
                pieces.append(run[0][0].take(pa.array([i for _, i in run], pa.int64())))
            run = []
        if row is not None:
            run.append(row)
    table = _concat(pieces) if pieces else parquet_schema().empty_table()
    for name, values in (("key", keys), ("status", ["success"] * len(keys))):
        column = pa.array(values, pa.string())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.append_column(name, column)
    return table


def _json_rows(metas: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist([parquet_row(m) for m in metas], schema=parquet_schema())
    extra = list(dict.fromkeys(k for m in metas for k in m if k not in PARQUET_COLUMNS))
    for name in extra:
        values = [m.get(name) for m in metas]
        plain = [v if v is None or isinstance(v, str | int | float) else json.dumps(v)
                 for v in values]  # fmt: skip
        try:
            column = pa.array(plain)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            column = _text(values)
        if not is_text(name):
            continue
        table = table.append_column(name, column)
    return table


def _text(values: list) -> pa.Array:
    """Values as text: strings as they are (when UTF-8), anything else as JSON."""
    return pa.array([None if v is None else v if is_text(v) else json.dumps(v, default=str)
                     for v in values], pa.string())  # fmt: skip


def _concat(tables: list[pa.Table]) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    types: dict[str, set] = {}
    for t in tables:
        for field in t.schema:
            if not pa.types.is_null(field.type):
                types.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, seen in types.items() if len(seen) > 1}
    fixed = []
    for t in tables:
        for name in mixed & set(t.column_names):
            i = t.column_names.index(name)
            t = t.set_column(i, name, _text(t.column(i).to_pylist()))
        fixed.append(t)
    return pa.concat_tables(fixed, promote_options="permissive")


class OutputShards:
    """Output shards of ``shard_size`` samples under temporary names in ``out_dir``;
    ``commit`` renames them all, ``discard`` removes them."""

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        self.out_dir, self.shard_size = out_dir, shard_size
        self.tmp = out_dir / f".filter-{os.getpid()}-{time.monotonic_ns()}"
        self.tmp.mkdir(parents=True)
        self.shard, self.writer, self.started = -1, None, 0.0
        self.rows: list[InputRow] = []
        self.keys: list[str] = []
        self.written: list[str] = []

    def _close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        files = shard_files(self.tmp, self.shard)
        pq.write_table(output_rows(self.rows, self.keys), files["parquet"])
        n = len(self.rows)
        stats = {
            "count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
            "duration": round(time.monotonic() - self.started, 3),
            "status_dict": {"success": n},
        }  # fmt: skip
        files["stats"].write_text(json.dumps(stats, indent=2) + "\n")
        self.written += [p.name for p in files.values()]
        self.writer, self.rows, self.keys = None, [], []

    def write(self, key: str, sample: dict[str, bytes], row: InputRow) -> None:
        if self.writer is None or len(self.rows) >= self.shard_size:
            self._close()
            self.shard += 1
            self.started = time.monotonic()
            path = shard_files(self.tmp, self.shard)["tar"]
            import webdataset as wds  # here: it imports torch, which only writing a shard
            # needs (not importing the filter)

            self.writer = wds.TarWriter(str(path), encoder=False, mtime=0)
        self.writer.write({"__key__": key, **sample})
        self.rows.append(row)
        self.keys.append(key)

    def commit(self, dropped: list[dict], counts: dict) -> None:
        self._close()
        with open(self.tmp / "dropped.parquet", "wb") as fh:
            columns = ("key", "shard", "reason", "detail")
            table = pa.table({c: pa.array([d[c] for d in dropped], pa.string()) for c in columns})
            pq.write_table(table, fh)
        for old in self.out_dir.iterdir():  # stale shards of an earlier, larger run
            if SHARD_RE.match(old.name) and old.name not in self.written:
                old.unlink()
        for name in [*self.written, "dropped.parquet"]:
            os.replace(self.tmp / name, self.out_dir / name)
        self.tmp.rmdir()
        write_json(self.out_dir / "counts.json", counts)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for p in self.tmp.iterdir():
            p.unlink()
        self.tmp.rmdir()
