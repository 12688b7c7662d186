"""A run's detection table: every text the detector sees, with its z-score, in one DataFrame.

Rows (``text`` column): the watermarked (``marked``), unwatermarked (``plain``) and human
completions of every prompt, each scored whole and cut to the first ``lengths`` tokens (z vs
T), and every ``attacked`` version of the watermarked ones. The prompt is context for the
first green lists but never scored. Texts too short to score keep z = NaN with the reason in
``problem`` (evaluation counts them as not detected), never a z of nan from 0 / 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workflow.common.errors import InputError, first_line
from workflow.watermark.detect import TooShort, score_many, windowed_z
from workflow.watermark.greenlist import DEFAULT_KEY
from workflow.watermark.records import show

TEXTS = ("marked", "plain", "human")
COLUMNS = ("id", "text", "attack", "epsilon", "length", "tokens", "green", "z", "window_z",
           "problem")  # fmt: skip


def score_table(
    generations: Sequence[Mapping[str, Any]],
    attacked: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    detect: Mapping[str, Any],
    vocab_size: int,
) -> pd.DataFrame:
    """``settings``: the run's gamma, scheme, key; ``detect``: ignore_repeated_ngrams, window,
    lengths (schema $defs/watermark_detect)."""
    prompts = {g["id"]: g["prompt_ids"] for g in generations}
    # (row so far, completion ids, whether its best window is scored too)
    jobs: list[tuple[dict[str, Any], list[int], bool]] = []
    for g in generations:
        for text in TEXTS:
            ids = g[f"{text}_ids"]
            cuts = [n for n in detect["lengths"] if n < len(ids)]
            for length in dict.fromkeys([len(ids), *cuts]):  # a length listed twice: one row
                row = {"id": g["id"], "text": text, "attack": "none", "epsilon": 0.0,
                       "length": int(length)}  # fmt: skip
                jobs.append((row, ids[:length], length == len(ids)))
    for a in attacked:
        row = {"id": a["id"], "text": "attacked", "attack": a["attack"],
               "epsilon": float(a["epsilon"]), "length": len(a["ids"])}  # fmt: skip
        jobs.append((row, a["ids"], a["attack"] == "copy_paste"))
    gamma, key = float(settings["gamma"]), int(settings.get("key", DEFAULT_KEY))
    texts = [prompts[row["id"]] + list(ids) for row, ids, _ in jobs]
    scores = score_many(
        texts, vocab_size, gamma, settings["scheme"], key=key,
        prefix_len=[len(prompts[row["id"]]) for row, _, _ in jobs],
        ignore_repeated_ngrams=bool(detect["ignore_repeated_ngrams"]),
    )  # fmt: skip
    rows = []
    for (row, _, windowed), text, s in zip(jobs, texts, scores, strict=True):
        window = (_window_z(text, prompts[row["id"]], settings, detect, vocab_size)
                  if windowed else math.nan)  # fmt: skip
        rows.append({**row, "tokens": s.tokens, "green": s.green,
                     "z": math.nan if s.z is None else s.z, "window_z": window,
                     "problem": s.problem or ""})  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _window_z(
    ids: list[int],
    prompt: list[int],
    settings: Mapping[str, Any],
    detect: Mapping[str, Any],
    vocab_size: int,
) -> float:
    """Best window's z (copy-paste detection), NaN when the text is shorter than a window."""
    try:
        return windowed_z(
            ids, vocab_size, float(settings["gamma"]), settings["scheme"], int(detect["window"]),
            key=int(settings.get("key", DEFAULT_KEY)), prefix_len=len(prompt),
            ignore_repeated_ngrams=bool(detect["ignore_repeated_ngrams"]),
        ).z  # fmt: skip
    except TooShort:
        return math.nan


def whole_texts(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of unattacked texts scored whole (not cut to a shorter length)."""
    clean = table[table.attack == "none"]
    return clean[clean.length == clean.groupby(["id", "text"]).length.transform("max")]


#: The score table's columns by kind: what evaluate and figures read, as detect writes them.
STRINGS = ("id", "text", "attack", "problem")
COUNTS = ("length", "tokens", "green")
REALS = ("epsilon", "z", "window_z")
#: What tells two rows apart: a text, scored whole or cut, clean or attacked at one rate.
ROW_KEY = ("id", "text", "attack", "epsilon", "length")


def read_scores(path: str | Path) -> pd.DataFrame:
    """A score table written by the detect stage; anything else (a missing column, a value of
    the wrong kind, a NaN z without a reason, a row twice) is an InputError naming the row."""
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a score table: {first_line(err)}") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"not a score table (no column {missing[0]!r})")
    if table.empty:
        raise InputError(path, "no rows (empty score table)")
    _check_kinds(path, table)
    _check_values(path, table)
    _check_rows_unique(path, table)
    return table


def _check_kinds(path: str | Path, table: pd.DataFrame) -> None:
    for column in STRINGS:
        _fail_at(path, table, ~table[column].map(lambda v: isinstance(v, str)), "not a string",
                 column)  # fmt: skip
    for column in COUNTS + REALS:
        kind = table[column].dtype
        numeric = pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind)
        if not numeric or (column in COUNTS and not pd.api.types.is_integer_dtype(kind)):
            wanted = "integer" if column in COUNTS else "numeric"
            raise InputError(path, f"column {column!r} is {kind}, not {wanted}")


def _check_values(path: str | Path, table: pd.DataFrame) -> None:
    """The values evaluate relies on: known texts, attacks only on attacked rows, rates in
    [0, 1], counts >= 0, z finite or NaN with the reason in ``problem``."""
    attacked = table.text == "attacked"
    _fail_at(path, table, ~table.text.isin([*TEXTS, "attacked"]),
             f"not one of {', '.join(TEXTS)}, attacked", "text")  # fmt: skip
    _fail_at(path, table, attacked & (table.attack == "none"), "on an attacked row", "attack")
    _fail_at(path, table, ~attacked & (table.attack != "none"), "on a clean row", "attack")
    _fail_at(path, table, ~table.epsilon.between(0.0, 1.0), "not a number in [0, 1]", "epsilon")
    for column in COUNTS:
        _fail_at(path, table, table[column] < 0, "negative", column)
    _fail_at(path, table, table.green > table.tokens, "more than 'tokens'", "green")
    for column in ("z", "window_z"):
        _fail_at(path, table, table[column].abs() == math.inf, "infinite", column)
    _fail_at(path, table, table.z.isna() & (table.problem == ""), "with no 'problem' given", "z")
    for text in TEXTS:
        if not (table.text == text).any():
            raise InputError(path, f"no {text!r} rows: not a whole detect output")


def _check_rows_unique(path: str | Path, table: pd.DataFrame) -> None:
    """A row twice would weigh twice in every rate evaluate computes."""
    again = table.duplicated(subset=list(ROW_KEY)).to_numpy()
    if again.any():
        second = int(again.argmax())
        key = table.iloc[second][list(ROW_KEY)]
        first = int((table[list(ROW_KEY)] == key).all(axis=1).to_numpy().argmax())
        names = ", ".join(f"{k} {show(v)}" for k, v in key.items())
        raise InputError(
            path, f"row {second + 1}: a second row of {names} (first: row {first + 1})"
        )


def _fail_at(
    path: str | Path, table: pd.DataFrame, bad: pd.Series, problem: str, column: str
) -> None:
    """An InputError at the first row (counted from 1) where ``bad`` holds, quoting its value."""
    if bad.any():
        row = int(bad.to_numpy().argmax())
        value = show(table[column].iloc[row])
        raise InputError(path, f"row {row + 1}: {column!r} is {value}, {problem}")
