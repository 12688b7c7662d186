"""JSONL files the watermark stages hand each other: one JSON object a line, written whole.

A stage's own outputs are read strictly (a damaged file stops the run with its path and line);
user documents go through ``prompts.read_documents``, where ``on_bad_sample`` applies instead.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError


class RawLine(str):
    """A line written as it is (a demo's planted damage), not as JSON."""


def write_records(
    path: str | PathLike[str], records: Iterable[Mapping[str, Any] | RawLine]
) -> None:
    """One JSON object per line (gzipped for a ``.gz`` path, as C4 ships), renamed into place
    only when complete."""
    text = "".join(
        (r if isinstance(r, RawLine) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records
    )
    with atomic_path(path) as tmp:
        if tmp.suffix == ".gz":
            with gzip.open(tmp, "wt", encoding="utf-8") as out:
                out.write(text)
        else:
            tmp.write_text(text, encoding="utf-8")


def read_records(
    path: str | PathLike[str], required: Sequence[str], what: str
) -> list[dict[str, Any]]:
    """Every line of ``path`` as a dict holding the ``required`` keys; else an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(path, f"line {number}: not valid JSON ({err.msg})") from None
            missing = [k for k in required if not isinstance(record, dict) or k not in record]
            if missing:
                raise InputError(path, f"line {number}: not a {what} record (no {missing[0]!r})")
            records.append(record)
    return records


#: A generations.jsonl line: the prompt, and the human, watermarked and plain completions of it.
GENERATION_FIELDS = ("id", "prompt_ids", "human_ids", "marked_ids", "plain_ids")


def read_generations(path: str | PathLike[str]) -> list[dict[str, Any]]:
    return read_records(path, GENERATION_FIELDS, "generation")
