"""Plain, slow, per-token watermark detector written from the published procedure.

It exists to check the vectorised detector (tests) and to time it (benchmark), so it shares
nothing with ``greenlist.py`` but ``torch.randperm`` on a CPU generator: seeds are recomputed in
Python integers for every token, with the int64 wraparound of the reference's tensor arithmetic
written out explicitly, and every green list is drawn afresh.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch

KEY = 15485863
TABLE_SEED = 2971215073
TABLE_SIZE = 1_000_003
MODULUS = 2**64 - 1

#: name -> (previous tokens in the context, whether the scored token salts its own seed)
SCHEMES = {"lefthash": (1, False), "selfhash": (3, True)}


@functools.cache
def _table() -> list[int]:
    rng = torch.Generator(device="cpu")
    rng.manual_seed(TABLE_SEED)
    return torch.randperm(TABLE_SIZE, generator=rng).tolist()


def hashint(value: int) -> int:
    """The reference's hashint on one Python int (Python's % is a floor modulo, like torch's)."""
    return _table()[value % TABLE_SIZE] + 1


def wrap_int64(value: int) -> int:
    """What a signed 64-bit register holds after computing ``value``."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def seed(context: list[int], token: int, scheme: str, key: int = KEY) -> int:
    """The PRF value for ``token`` after ``context`` (the previous tokens)."""
    previous, self_salted = SCHEMES[scheme]
    if len(context) != previous:
        raise ValueError(f"{scheme} needs {previous} previous tokens")
    if not self_salted:
        return key * sum(context)  # additive PRF of the one previous token
    anchor = hashint(token)
    return min(wrap_int64(key * hashint(x) * anchor) for x in [*context, token])


def green_ids(seed_value: int, vocab_size: int, gamma: float) -> set[int]:
    """The green list: the first int(gamma * V) ids of a seeded permutation."""
    rng = torch.Generator(device="cpu")
    rng.manual_seed(seed_value % MODULUS)
    permutation = torch.randperm(vocab_size, generator=rng).tolist()
    return set(permutation[: int(vocab_size * gamma)])


def is_green(
    context: list[int], token: int, vocab_size: int, gamma: float, scheme: str, key: int = KEY
) -> bool:
    return token in green_ids(seed(context, token, scheme, key), vocab_size, gamma)


def flags(
    ids: Iterable[int],
    vocab_size: int,
    gamma: float,
    scheme: str,
    key: int = KEY,
    prefix_len: int = 0,
    ignore_repeated_ngrams: bool = False,
) -> list[bool]:
    """Green or red for every counted token, in order."""
    previous, _ = SCHEMES[scheme]
    ids = [int(i) for i in ids]
    seen: set[tuple[int, ...]] = set()
    out = []
    for t in range(max(prefix_len, previous), len(ids)):
        context, token = ids[t - previous : t], ids[t]
        if ignore_repeated_ngrams:
            if (*context, token) in seen:
                continue
            seen.add((*context, token))
        out.append(is_green(context, token, vocab_size, gamma, scheme, key))
    return out


def count_green(ids: Iterable[int], vocab_size: int, gamma: float, scheme: str,
                **options) -> tuple[int, int]:  # fmt: skip
    """(green tokens, counted tokens); ``options`` as :func:`flags` takes them."""
    hits = flags(ids, vocab_size, gamma, scheme, **options)
    return sum(hits), len(hits)


def z_score(green: int, total: int, gamma: float) -> float:
    expected = gamma * total
    return (green - expected) / math.sqrt(total * gamma * (1 - gamma))
