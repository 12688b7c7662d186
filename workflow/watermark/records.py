"""JSONL files the watermark stages hand each other: one JSON object a line, written whole.

A stage's own outputs are read strictly: a damaged file (broken JSON, a missing key, a value of
the wrong type, a token id outside the tokenizer's vocabulary, a record twice) means a broken
upstream stage or a hand edit, and stops the run with its path and line. User documents go
through ``prompts.read_documents``, where ``on_bad_sample`` applies instead.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError, first_line
from workflow.common.values import is_number
from workflow.watermark.attacks import ATTACKS


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


#: What is wrong with a field's value ("is not a string"), or None when it is fine.
Check = Callable[[Any], str | None]

#: Where a record's identity was first seen: identity -> (file, line).
Seen = dict[tuple[Any, ...], tuple[Path, int]]

#: The attacked records' ``attack`` names: the attack stage's and the paraphrase stage's.
ATTACK_NAMES = (*ATTACKS, "paraphrase")


def show(value: Any, limit: int = 40) -> str:
    """A value as an error message quotes it: cut short, for a hostile line may be megabytes."""
    value = value.item() if isinstance(value, np.generic) else value  # np.int64(3) -> 3
    shown = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "a huge int"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else "is not a string"


def identifier(value: Any) -> str | None:
    """An identity part: a non-empty string (an empty id cannot tell records apart)."""
    return None if isinstance(value, str) and value else "is not a non-empty string"


def token_ids(vocab: int | None = None) -> Check:
    """A list of integer ids in ``[0, vocab)``: an id outside the tokenizer's vocabulary
    indexes no green list (torch would wrap a negative one and score it silently)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return "is not a list of token ids"
        for index, token in enumerate(value):
            if type(token) is not int:  # bool is an int subclass, and 1.0 is no token id
                return f"is not a list of integer token ids (item {index} is {show(token)})"
            if token < 0 or (vocab is not None and token >= vocab):
                bound = f"[0, {vocab})" if vocab is not None else "[0, ...)"
                return f"holds token id {show(token)}, outside the tokenizer's vocabulary {bound}"
        return None

    return check


def rate(value: Any) -> str | None:
    """An edit rate or pasted fraction: a finite number in [0, 1] (NaN would drop out of the
    attack curves' groups unnoticed)."""
    if is_number(value) and 0.0 <= value <= 1.0:
        return None
    return f"is {show(value)}, not a number in [0, 1]"


def one_of(allowed: Sequence[str]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"is {show(value)}, not one of {', '.join(allowed)}"

    return check


def known(ids: Collection[str], where: str) -> Check:
    """An id that ``where`` holds: an attacked text of an unknown prompt has no context."""

    def check(value: Any) -> str | None:
        if problem := identifier(value):
            return problem
        return None if value in ids else f"is {show(value)}, which {where} does not hold"

    return check


def read_records(
    path: str | PathLike[str],
    fields: Sequence[str] | Mapping[str, Check | None],
    what: str,
    identity: Sequence[str] = (),
    seen: Seen | None = None,
) -> list[dict[str, Any]]:
    """Every line of ``path`` as a dict holding the ``fields`` (each passing its check, if
    any), no two with the same ``identity`` values (also across files sharing ``seen``);
    anything else is an InputError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    checks = fields if isinstance(fields, Mapping) else dict.fromkeys(fields)
    seen = {} if seen is None else seen
    records = []
    for number, line in _lines(path):
        record = _parse(path, number, line)
        _check_fields(path, number, record, checks, what)
        if identity:
            _check_unique(path, number, tuple(record[k] for k in identity), identity, seen, what)
        records.append(record)
    return records


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines, decoded one by one so that bad bytes are reported with their line."""
    try:
        lines = path.open("rb")
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror})") from None
    with lines:
        for number, raw in enumerate(lines, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(path, f"line {number}: not UTF-8 text ({err.reason})") from None


def _parse(path: Path, number: int, line: str) -> Any:
    """One JSON value, strictly: no NaN or Infinity (no writer here emits them) and no key
    twice (json would keep the last one silently)."""
    try:
        return json.loads(line, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise InputError(path, f"line {number}: not valid JSON ({err.msg})") from None
    except (ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise InputError(path, f"line {number}: not valid JSON ({reason})") from None


def _no_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not a number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        twice = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise ValueError(f"key {twice!r} appears twice")
    return record


def _check_fields(
    path: Path, number: int, record: Any, checks: Mapping[str, Check | None], what: str
) -> None:
    if not isinstance(record, dict):
        raise InputError(path, f"line {number}: not a {what} record (not a JSON object)")
    missing = [k for k in checks if k not in record]
    if missing:
        raise InputError(path, f"line {number}: not a {what} record (no {missing[0]!r})")
    for key, check in checks.items():
        if check is not None and (problem := check(record[key])):
            raise InputError(path, f"line {number}: {key!r} {problem}")


def _check_unique(
    path: Path, number: int, key: tuple[Any, ...], identity: Sequence[str], seen: Seen, what: str
) -> None:
    """A second record of one identity (a stage run twice into one file, a hand edit) would
    be scored twice and weigh twice in every rate."""
    first_path, first_line = seen.setdefault(key, (path, number))
    if (first_path, first_line) == (path, number):
        return
    where = f"line {first_line}" if first_path == path else f"{first_path} line {first_line}"
    names = ", ".join(f"{k} {show(v)}" for k, v in zip(identity, key, strict=True))
    raise InputError(path, f"line {number}: a second {what} record of {names} (first on {where})")


#: A generations.jsonl line: the prompt, and the human, watermarked and plain completions of it,
#: as token ids (what detection and the attacks read) and as text (the paraphraser and oracle).
TEXTS = ("prompt", "human", "marked", "plain")


def read_generations(path: str | PathLike[str], vocab: int | None = None) -> list[dict[str, Any]]:
    """The generate stage's records, one per prompt id; token ids within ``vocab`` when
    given (the stages that score or edit ids know the tokenizer)."""
    ids = token_ids(vocab)
    fields: dict[str, Check] = {"id": identifier, **{f"{t}_ids": ids for t in TEXTS},
                                **dict.fromkeys(TEXTS, string)}  # fmt: skip
    records = read_records(path, fields, "generation", identity=("id",))
    if not records:
        raise InputError(path, "no generation records (empty file)")
    return records


def read_attacked(
    paths: Sequence[str | PathLike[str]], generation_ids: Collection[str]
) -> list[dict[str, Any]]:
    """The attack and paraphrase stages' records - the attacked text - one per (id, attack,
    epsilon) over all ``paths``, each of a prompt in the generations (an empty file is no
    attack at all)."""
    fields = {"id": known(generation_ids, "the generations file"),
              "attack": one_of(ATTACK_NAMES), "epsilon": rate, "text": string}  # fmt: skip
    seen: Seen = {}
    return [
        record
        for path in paths
        for record in read_records(path, fields, "attacked text", ("id", "attack", "epsilon"), seen)
    ]


#: The generate stage's speed record: the numbers evaluate copies into metrics.json.
SPEED_FIELDS = ("tokens_per_s_marked", "tokens_per_s_plain", "slowdown", "train_wall_time_s")


def read_speed_record(path: str | PathLike[str]) -> dict[str, Any]:
    """The generate stage's ``generation.json``: a JSON object whose speeds are numbers."""
    what = "generation speed record"
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        record = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InputError(path, f"not a {what}: {first_line(err)}") from None
    if not isinstance(record, dict):
        raise InputError(path, f"not a {what}: not a JSON object")
    for key in SPEED_FIELDS:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(path, f"not a {what}: {key!r} is {show(value)}, not a number")
    return record
