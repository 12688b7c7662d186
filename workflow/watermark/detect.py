"""Watermark detection: green-token counts, z-scores and p-values, vectorised over positions.

The seeds of all scored positions are gathered with tensor ops and each unique seed's green
list is drawn once, so the cost is one ``randperm`` per distinct context, shared across texts
in ``score_many``. Scoring matches the reference ``WatermarkDetector`` (which scores every token
after the first ``lookback`` ones of what it is given), except that ``prefix_len`` lets the
prompt serve as context for the first generated tokens without being scored itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workflow.watermark import greenlist
from workflow.watermark.greenlist import DEFAULT_KEY, SeedingScheme

Ids = Sequence[int] | torch.Tensor | np.ndarray


class TooShort(ValueError):
    """Too few scorable tokens for a z-score; carries the count so callers can report it."""

    def __init__(self, tokens: int, needed: int) -> None:
        super().__init__(
            f"too short to score: {tokens} tokens after the prompt (needs at least {needed})"
        )
        self.tokens = tokens
        self.needed = needed


@dataclass(frozen=True)
class Score:
    """Detection result; ``z`` and ``p_value`` are None (and ``problem`` says why) if unscorable."""

    tokens: int
    green: int
    z: float | None
    p_value: float | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def green_fraction(self) -> float | None:
        return self.green / self.tokens if self.tokens else None


def z_score(green: int, total: int, gamma: float, trials: int = 1) -> float:
    """One-proportion z-test of the green count against gamma (the paper's Eq. 2); with
    ``trials`` draws per token (SynthID's layers), of the hits of ``trials * total`` draws."""
    if total < 1:
        raise TooShort(total, 1)
    greenlist.check_gamma(gamma)
    draws = trials * total
    return (green - gamma * draws) / math.sqrt(draws * gamma * (1.0 - gamma))


def p_value(z: float) -> float:
    """One-sided normal tail P(Z >= z); erfc keeps precision far in the tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def green_flags(
    ids: Ids,
    vocab_size: int,
    gamma: float,
    scheme: str | SeedingScheme,
    *,
    key: int = DEFAULT_KEY,
    prefix_len: int = 0,
) -> np.ndarray:
    """Green (True) or red per scored position ``t >= max(prefix_len, lookback)``, in order."""
    return _flags_many([ids], vocab_size, gamma, scheme, key, [prefix_len])[0][1].numpy()


def score(
    ids: Ids,
    vocab_size: int,
    gamma: float,
    scheme: str | SeedingScheme,
    *,
    key: int = DEFAULT_KEY,
    prefix_len: int = 0,
    ignore_repeated_ngrams: bool = False,
    min_tokens: int = 1,
) -> Score:
    """Score one text; raises TooShort below ``min_tokens`` scored tokens (never returns nan)."""
    result = score_many(
        [ids], vocab_size, gamma, scheme, key=key, prefix_len=prefix_len,
        ignore_repeated_ngrams=ignore_repeated_ngrams, min_tokens=min_tokens,
    )[0]  # fmt: skip
    if not result.ok:
        raise TooShort(result.tokens, min_tokens)
    return result


def score_many(
    texts: Sequence[Ids],
    vocab_size: int,
    gamma: float,
    scheme: str | SeedingScheme,
    *,
    key: int = DEFAULT_KEY,
    prefix_len: int | Sequence[int] = 0,
    ignore_repeated_ngrams: bool = False,
    min_tokens: int = 1,
) -> list[Score]:
    """Score many texts sharing green-list draws; too-short texts get ``problem`` set, not raised.

    ``prefix_len`` is one prompt length for all texts or one per text.
    """
    if min_tokens < 1:
        raise ValueError("min_tokens must be at least 1: a z-score of no tokens is nan")
    flags = scored_flags(texts, vocab_size, gamma, scheme, key=key, prefix_len=prefix_len,
                         ignore_repeated_ngrams=ignore_repeated_ngrams)  # fmt: skip
    return [score_hits(f, gamma, min_tokens=min_tokens) for f in flags]


def scored_flags(
    texts: Sequence[Ids],
    vocab_size: int,
    gamma: float,
    scheme: str | SeedingScheme,
    *,
    key: int = DEFAULT_KEY,
    prefix_len: int | Sequence[int] = 0,
    ignore_repeated_ngrams: bool = False,
) -> list[torch.Tensor]:
    """Each text's green flags, in order, of the tokens the z-test counts (with
    ``ignore_repeated_ngrams``, each distinct n-gram's first occurrence only)."""
    greenlist.check_gamma(gamma)
    prefixes = [prefix_len] * len(texts) if isinstance(prefix_len, int) else list(prefix_len)
    out = []
    for rows, flags in _flags_many(texts, vocab_size, gamma, scheme, key, prefixes):
        out.append(flags[_first_occurrences(rows)] if ignore_repeated_ngrams else flags)
    return out


@dataclass(frozen=True)
class WinMax:
    """The best window over every window size: its z and size (``tokens``)."""

    z: float
    tokens: int


def winmax(flags: Sequence[int] | torch.Tensor, gamma: float, trials: int = 1) -> WinMax | None:
    """WinMax (Kirchenbauer et al. 2023b): the largest z of any run of consecutive scored
    tokens, over every size from 1 to one less than the whole (the reference's
    ``window_size="max"``, stride 1), on the flags left after ``ignore_repeated_ngrams``.
    Not a calibrated z - the max over many overlapping tests is large on any text - so its
    threshold comes from unwatermarked text (evaluate.py). None below two scored tokens.
    ``flags`` may count hits of ``trials`` draws per token (SynthID's g-values)."""
    greenlist.check_gamma(gamma)
    hits = torch.as_tensor(flags, dtype=torch.float64).reshape(-1)
    n = hits.numel()
    if n < 2:
        return None
    totals = torch.cat([torch.zeros(1, dtype=torch.float64), hits.cumsum(0)])
    sizes = torch.arange(n + 1, dtype=torch.float64)
    green = totals[None, :] - totals[:, None]  # green[i, j]: tokens i .. j - 1
    size = sizes[None, :] - sizes[:, None]
    valid = (size >= 1) & (size <= n - 1)
    draws = size.clamp(min=1) * trials
    z = (green - gamma * draws) / torch.sqrt(draws * gamma * (1.0 - gamma))
    z = torch.where(valid, z, torch.tensor(-math.inf, dtype=torch.float64))
    best = int(torch.argmax(z))
    return WinMax(z=float(z.reshape(-1)[best]), tokens=int(size.reshape(-1)[best]))


def score_hits(hits: torch.Tensor, gamma: float, trials: int = 1, min_tokens: int = 1) -> Score:
    """The z-test of one text's per-token hits (green flags, or SynthID's g-value counts of
    ``trials`` draws); ``problem`` set below ``min_tokens`` scored tokens."""
    tokens, green = int(hits.numel()), int(hits.sum())
    if tokens < min_tokens:
        return Score(tokens, green, None, None, str(TooShort(tokens, min_tokens)))
    z = z_score(green, tokens, gamma, trials)
    return Score(tokens, green, z, p_value(z))


def _as_ids(ids: Ids) -> torch.Tensor:
    tensor = torch.as_tensor(ids, dtype=torch.long).cpu()
    if tensor.ndim != 1:
        raise ValueError(f"expected one sequence of token ids, got shape {tuple(tensor.shape)}")
    return tensor


def _first_scored(sch: SeedingScheme, prefix_len: int) -> int:
    """Index of the first scored token: after the prompt, and with a full context."""
    if prefix_len < 0:
        raise ValueError("prefix_len must be >= 0")
    return max(prefix_len, sch.lookback)


def _scored_rows(ids: torch.Tensor, sch: SeedingScheme, prefix_len: int) -> torch.Tensor:
    """(context..., token) rows of the scored positions; contexts may reach into the prompt."""
    skip = _first_scored(sch, prefix_len) - sch.lookback
    return greenlist.ngrams(ids, sch)[skip:]


def _flags_many(
    texts: Sequence[Ids],
    vocab_size: int,
    gamma: float,
    scheme: str | SeedingScheme,
    key: int,
    prefixes: Sequence[int],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(n-gram rows, green flags) per text, with one seed ``unique`` over all texts together."""
    if len(prefixes) != len(texts):
        raise ValueError(f"{len(prefixes)} prefix lengths for {len(texts)} texts")
    sch = greenlist.scheme(scheme)
    greenlist.check_gamma(gamma)
    rows = [_scored_rows(_as_ids(ids), sch, p) for ids, p in zip(texts, prefixes, strict=True)]
    if not rows:
        return []
    stacked = torch.cat(rows)
    seeds = greenlist.prf_seeds(greenlist.prf_inputs(stacked, sch), sch, key)
    flags = greenlist.is_green(seeds, stacked[:, -1], vocab_size, gamma)
    return list(zip(rows, flags.split([len(r) for r in rows]), strict=True))


def _first_occurrences(rows: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each distinct n-gram, in text order."""
    if rows.shape[0] == 0:
        return torch.empty(0, dtype=torch.long)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    n = rows.shape[0]
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin")
    return first.sort().values
