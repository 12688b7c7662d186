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

from workflow.common.errors import InputError
from workflow.watermark.detect import TooShort, score_many, windowed_z
from workflow.watermark.greenlist import DEFAULT_KEY

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
            for length in [len(ids), *(n for n in detect["lengths"] if n < len(ids))]:
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
        texts, vocab_size, gamma, settings["scheme"], key,
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
            int(settings.get("key", DEFAULT_KEY)), prefix_len=len(prompt),
            ignore_repeated_ngrams=bool(detect["ignore_repeated_ngrams"]),
        ).z  # fmt: skip
    except TooShort:
        return math.nan


def whole_texts(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of unattacked texts scored whole (not cut to a shorter length)."""
    clean = table[table.attack == "none"]
    return clean[clean.length == clean.groupby(["id", "text"]).length.transform("max")]


def read_scores(path: str | Path) -> pd.DataFrame:
    """A score table written by the detect stage; anything else is an InputError."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a score table: {err}") from None
