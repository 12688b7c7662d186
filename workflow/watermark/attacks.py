"""Edits an adversary makes to a watermarked completion before detection.

Substitution, deletion and insertion change a fraction ``epsilon`` of the completion's tokens.
They are *nested*: each text draws one random order of its positions (and the tokens to put
there) from its own id, and a larger epsilon edits a superset of the positions a smaller one
edits, so an attack curve over epsilon measures the attack, not fresh noise per point.
Copy-paste puts a watermarked span of a given fraction into the human completion of the same
prompt, at a random offset (Kirchenbauer et al. 2023b, "On the reliability of watermarks").
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ATTACKS = ("substitute", "delete", "insert", "copy_paste")


def text_rng(text_id: str, seed: int) -> np.random.Generator:
    """A generator fixed by the text and the run's seed (not by the order texts come in)."""
    return np.random.default_rng([seed, zlib.crc32(text_id.encode())])


def edited_positions(n: int, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """The first ``round(epsilon * n)`` positions of one random order: nested in epsilon."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    order = rng.permutation(n)
    return order[: int(round(epsilon * n))]


def substitute(
    ids: Sequence[int], epsilon: float, vocab_size: int, rng: np.random.Generator
) -> list[int]:
    """Replace a fraction epsilon of the tokens by random ones."""
    out = np.asarray(ids, dtype=np.int64).copy()
    replacements = rng.integers(0, vocab_size, size=len(out))  # drawn for all: nested
    where = edited_positions(len(out), epsilon, rng)
    out[where] = replacements[where]
    return out.tolist()


def delete(ids: Sequence[int], epsilon: float, rng: np.random.Generator) -> list[int]:
    """Drop a fraction epsilon of the tokens."""
    keep = np.ones(len(ids), dtype=bool)
    keep[edited_positions(len(ids), epsilon, rng)] = False
    return np.asarray(ids, dtype=np.int64)[keep].tolist()


def insert(
    ids: Sequence[int], epsilon: float, vocab_size: int, rng: np.random.Generator
) -> list[int]:
    """Put a random token before a fraction epsilon of the tokens."""
    extra = rng.integers(0, vocab_size, size=len(ids))
    before = set(edited_positions(len(ids), epsilon, rng).tolist())
    out: list[int] = []
    for position, token in enumerate(ids):
        if position in before:
            out.append(int(extra[position]))
        out.append(int(token))
    return out


def copy_paste(
    marked: Sequence[int], human: Sequence[int], fraction: float, rng: np.random.Generator
) -> tuple[list[int], int, int]:
    """The human tokens with ``marked[a:a + k]`` pasted over ``human[a:a + k]``,
    ``k = round(fraction * n)``; returns the text and the span (a, a + k)."""
    n = min(len(marked), len(human))
    k = int(round(fraction * n))
    start = int(rng.integers(0, n - k + 1))
    out = list(human[:start]) + list(marked[start : start + k]) + list(human[start + k :])
    return out, start, start + k


def attack(
    name: str,
    ids: Sequence[int],
    epsilon: float,
    vocab_size: int,
    rng: np.random.Generator,
    human: Sequence[int] | None = None,
) -> list[int]:
    """One attack by name; ``epsilon`` is the edit rate (copy-paste: the pasted fraction)."""
    if name == "substitute":
        return substitute(ids, epsilon, vocab_size, rng)
    if name == "delete":
        return delete(ids, epsilon, rng)
    if name == "insert":
        return insert(ids, epsilon, vocab_size, rng)
    if name == "copy_paste":
        if human is None:
            raise ValueError("copy_paste needs the human completion")
        return copy_paste(ids, human, epsilon, rng)[0]
    raise ValueError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})")


def attack_records(
    generations: Sequence[Mapping[str, Any]],
    attacks: Mapping[str, Sequence[float]],
    vocab_size: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Every watermarked completion under every attack and rate of ``attacks`` (name ->
    epsilons); each text's edits are nested in epsilon (one generator per text and attack)."""
    out = []
    for name, epsilons in attacks.items():
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})")
        for g in generations:
            for epsilon in epsilons:
                rng = text_rng(f"{name}:{g['id']}", seed)  # the same draws at every epsilon
                ids = attack(name, g["marked_ids"], float(epsilon), vocab_size, rng,
                             human=g["human_ids"])  # fmt: skip
                out.append({"id": g["id"], "attack": name, "epsilon": float(epsilon), "ids": ids})
    return out
