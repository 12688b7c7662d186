"""A run's detection table: every text the detector sees, with its z-score, in one DataFrame.

Every text is scored as a reader would receive it: its string, normalised and tokenised by
the generator's tokenizer (textdetect.py), never the token ids it was generated as - 25 of the
demo's 48 watermarked completions do not survive decode -> encode unchanged. As the
reference's detector, the completion is scored alone: its first ``lookback`` tokens are only
context.

``tokens`` are the scored tokens, ``draws`` their green/red draws (one per token; SynthID's
``depth`` g-values per token), ``green`` the hits among them (schemes.py).

Rows (``text`` column): the watermarked (``marked``), unwatermarked (``plain``) and human
completions of every prompt, each scored whole and cut to the text of its first ``lengths``
generated tokens (z vs T; ``length`` counts generated tokens, ``tokens`` the scored ones),
and every ``attacked`` version of the watermarked ones (``length``: its tokens as read).
Whole and attacked texts also get their WinMax z (detect.winmax: the best run of tokens, for
watermarked text pasted into other text). Texts too short to score keep z = NaN with the
reason in ``problem`` (evaluation counts them as not detected), never a z of nan from 0 / 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedTokenizerBase

from workflow.common.errors import InputError, first_line
from workflow.watermark.detect import score_hits, winmax
from workflow.watermark.hf import vocabulary_size
from workflow.watermark.records import show
from workflow.watermark.schemes import scheme_of
from workflow.watermark.textdetect import text_ids

TEXTS = ("marked", "plain", "human")
COLUMNS = ("id", "text", "attack", "epsilon", "length", "tokens", "draws", "green", "z",
           "winmax_z", "winmax_tokens", "problem")  # fmt: skip


def score_table(
    generations: Sequence[Mapping[str, Any]],
    attacked: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    detect: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
) -> pd.DataFrame:
    """``settings``: the run's gamma, scheme, key; ``detect``: ignore_repeated_ngrams,
    normalizers, lengths (schema $defs/watermark_detect); ``tokenizer``: the generator's."""
    normalizers = list(detect.get("normalizers") or [])
    # (row so far, the ids the detector reads, whether WinMax is scored too)
    jobs: list[tuple[dict[str, Any], list[int], bool]] = []
    for g in generations:
        for text in TEXTS:
            written = g[f"{text}_ids"]  # as generated: a cut is the text generation gave by then
            cuts = [n for n in detect["lengths"] if n < len(written)]
            for length in dict.fromkeys([len(written), *cuts]):  # a length twice: one row
                whole = length == len(written)
                read = (
                    g[text]
                    if whole
                    else tokenizer.decode(written[:length], skip_special_tokens=True)
                )
                row = {"id": g["id"], "text": text, "attack": "none", "epsilon": 0.0,
                       "length": int(length)}  # fmt: skip
                jobs.append((row, text_ids(read, tokenizer, normalizers), whole))
    for a in attacked:
        ids = text_ids(a["text"], tokenizer, normalizers)
        row = {"id": a["id"], "text": "attacked", "attack": a["attack"],
               "epsilon": float(a["epsilon"]), "length": len(ids)}  # fmt: skip
        jobs.append((row, ids, True))
    scheme = scheme_of(settings, vocabulary_size(tokenizer))
    p, trials = scheme.null_p, scheme.trials
    flags = scheme.hits([ids for _, ids, _ in jobs], bool(detect["ignore_repeated_ngrams"]))
    rows = []
    for (row, _, windowed), hits in zip(jobs, flags, strict=True):
        scored = score_hits(hits, p, trials)
        z, problem = math.nan if scored.z is None else scored.z, scored.problem or ""
        best = winmax(hits, p, trials) if windowed else None
        rows.append({**row, "tokens": scored.tokens, "draws": scored.tokens * trials,
                     "green": scored.green, "z": z,
                     "winmax_z": best.z if best else math.nan,
                     "winmax_tokens": best.tokens if best else 0, "problem": problem})  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))


def whole_texts(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of unattacked texts scored whole (not cut to a shorter length)."""
    clean = table[table.attack == "none"]
    return clean[clean.length == clean.groupby(["id", "text"]).length.transform("max")]


#: The score table's columns by kind: what evaluate and figures read, as detect writes them.
STRINGS = ("id", "text", "attack", "problem")
COUNTS = ("length", "tokens", "draws", "green", "winmax_tokens")
REALS = ("epsilon", "z", "winmax_z")
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
    _fail_at(path, table, table.draws < table.tokens, "fewer than 'tokens'", "draws")
    _fail_at(path, table, table.green > table.draws, "more than 'draws'", "green")
    for column in ("z", "winmax_z"):
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
