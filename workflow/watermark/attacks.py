"""Edits an adversary makes to a watermarked completion before detection: on its text, as a
reader would make them, never on the generator's token ids.

Substitution, deletion and insertion change a fraction ``epsilon`` of the completion's
*words* (whitespace-separated; the whitespace between them is kept). A substituted or inserted
word is drawn from the words of the human completions, so the text stays made of real words.
The edits are *nested*: each text draws one random order of its words (and the words to put
there) from its own id, and a larger epsilon edits a superset of the words a smaller one
edits, so an attack curve over epsilon measures the attack, not fresh noise per point.

Homoglyph and whitespace attacks change characters, not words: lookalikes of another script,
unusual spaces. A reader sees the same text; the tokenizer does not, unless the detector's
normalisers (normalize.py) map them back first.

Copy-paste is the reliability paper's CP-n-x% (Kirchenbauer et al. 2023b, its
``k_insertion_t_len``): both completions are tokenised, ``n`` non-overlapping spans of
``int(x * T)`` tokens of the watermarked one are copied over the human one at the same
positions, and the result is decoded to text. ``copy_paste`` pastes one span, ``copy_paste_3``
three (the paper's CP-1 and CP-3); epsilon is ``x``, the fraction of T each span covers.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

WORD_ATTACKS = ("substitute", "delete", "insert")
#: Attacks a reader does not see: characters swapped for lookalikes of another script, spaces
#: for unusual space characters (detect.normalizers ``homoglyphs`` and ``unicode`` undo them).
STRING_ATTACKS = ("homoglyph", "whitespace")
#: Copy-paste attack -> the number of watermarked spans it pastes.
COPY_PASTE = {"copy_paste": 1, "copy_paste_3": 3}
ATTACKS = (*WORD_ATTACKS, *STRING_ATTACKS, *COPY_PASTE)
#: Latin letters and their Cyrillic lookalikes (Unicode confusables).
LOOKALIKES = str.maketrans("aceopxyABCEHKMOPTX", "асеорхуАВСЕНКМОРТХ")
#: The space put in: THREE-PER-EM SPACE, one of the reference normaliser's unusual spaces.
ODD_SPACE = "\u2004"

_PIECES = re.compile(r"(\s+)")


def text_rng(text_id: str, seed: int) -> np.random.Generator:
    """A generator fixed by the text and the run's seed (not by the order texts come in)."""
    return np.random.default_rng([seed, zlib.crc32(text_id.encode())])


def edited_positions(n: int, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """The first ``round(epsilon * n)`` positions of one random order: nested in epsilon."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    order = rng.permutation(n)
    return order[: int(round(epsilon * n))]


def split_words(text: str) -> tuple[list[str], list[str]]:
    """The words of ``text`` and the whitespace around them: ``text`` is
    ``spaces[0] + words[0] + spaces[1] + ... + words[-1] + spaces[-1]``."""
    words, spaces, gap = [], [], ""
    for i, piece in enumerate(_PIECES.split(text)):  # word, space, word, ..., word
        if i % 2:
            gap += piece
        elif piece:
            words.append(piece)
            spaces.append(gap)
            gap = ""
    return words, [*spaces, gap]


def join_words(words: Sequence[str], spaces: Sequence[str]) -> str:
    out = [spaces[0]]
    for word, space in zip(words, spaces[1:], strict=True):
        out += [word, space]
    return "".join(out)


def word_pool(texts: Sequence[str]) -> list[str]:
    """The distinct words of ``texts``, sorted: what substitution and insertion draw from."""
    return sorted({w for t in texts for w in t.split()})


def substitute(text: str, epsilon: float, pool: Sequence[str], rng: np.random.Generator) -> str:
    """Replace a fraction epsilon of the words by words of the pool."""
    words, spaces = split_words(text)
    replacements = rng.integers(0, len(pool), size=len(words))  # drawn for all: nested
    for i in edited_positions(len(words), epsilon, rng):
        words[i] = pool[int(replacements[i])]
    return join_words(words, spaces)


def delete(text: str, epsilon: float, rng: np.random.Generator) -> str:
    """Drop a fraction epsilon of the words (each with the whitespace after it)."""
    words, spaces = split_words(text)
    drop = set(edited_positions(len(words), epsilon, rng).tolist())
    kept = [i for i in range(len(words)) if i not in drop]
    if not kept:
        return spaces[0]
    return join_words([words[i] for i in kept], [spaces[0], *[spaces[i + 1] for i in kept]])


def insert(text: str, epsilon: float, pool: Sequence[str], rng: np.random.Generator) -> str:
    """Put a word of the pool (and a space) before a fraction epsilon of the words."""
    words, spaces = split_words(text)
    extra = rng.integers(0, len(pool), size=len(words))
    before = set(edited_positions(len(words), epsilon, rng).tolist())
    out_words, out_spaces = [], [spaces[0]]
    for i, word in enumerate(words):
        if i in before:
            out_words.append(pool[int(extra[i])])
            out_spaces.append(" ")
        out_words.append(word)
        out_spaces.append(spaces[i + 1])
    return join_words(out_words, out_spaces)


def homoglyph(text: str, epsilon: float, rng: np.random.Generator) -> str:
    """Write a fraction epsilon of the words with Cyrillic lookalikes of their Latin letters."""
    words, spaces = split_words(text)
    for i in edited_positions(len(words), epsilon, rng):
        words[i] = words[i].translate(LOOKALIKES)
    return join_words(words, spaces)


def whitespace(text: str, epsilon: float, rng: np.random.Generator) -> str:
    """Replace the space after a fraction epsilon of the words by an unusual space."""
    words, spaces = split_words(text)
    for i in edited_positions(len(words), epsilon, rng):
        spaces[i + 1] = spaces[i + 1].replace(" ", ODD_SPACE)
    return join_words(words, spaces)


def span_starts(n: int, spans: int, length: int, rng: np.random.Generator) -> list[int]:
    """Starts of ``spans`` non-overlapping spans of ``length`` in ``n`` positions, the last
    ending before ``n`` (the reference's condition), uniform over all such placements: the
    reference's rejection sampling, drawn directly."""
    free = n - spans * length - 1
    if length < 1 or free < 0:
        raise ValueError(f"{spans} spans of {length} tokens do not fit in {n} tokens")
    bars = np.sort(rng.choice(free + spans, size=spans, replace=False))
    return [int(b) - i + i * length for i, b in enumerate(bars)]


def copy_paste(
    marked: Sequence[int],
    human: Sequence[int],
    spans: int,
    fraction: float,
    new_tokens: int,
    rng: np.random.Generator,
) -> list[int]:
    """``human`` with ``spans`` spans of ``int(fraction * new_tokens)`` tokens of ``marked``
    copied over it at the same positions."""
    n = min(len(marked), len(human))
    length = int(fraction * new_tokens)
    out = list(human)
    for start in span_starts(n, spans, length, rng):
        out[start : start + length] = marked[start : start + length]
    return out


def attack_records(
    generations: Sequence[Mapping[str, Any]],
    attacks: Mapping[str, Sequence[float]],
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
) -> list[dict[str, Any]]:
    """Every watermarked completion under every attack and rate of ``attacks`` (name ->
    epsilons), as text; each text's edits are nested in epsilon (one generator per text and
    attack). ``tokenizer`` (the generator's) cuts copy-paste spans, whose length is a fraction
    of T, the generated tokens (every completion is exactly T long: generate.py)."""
    unknown = [name for name in attacks if name not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r} (known: {', '.join(ATTACKS)})")
    pool = word_pool([g["human"] for g in generations])
    out = []
    for name, epsilons in attacks.items():
        for g in generations:
            if name in COPY_PASTE:
                marked, human = (tokenizer(g[t], add_special_tokens=False)["input_ids"]
                                 for t in ("marked", "human"))  # fmt: skip
            for epsilon in epsilons:
                rng = text_rng(f"{name}:{g['id']}", seed)  # the same draws at every epsilon
                eps = float(epsilon)
                if name == "substitute":
                    text = substitute(g["marked"], eps, pool, rng)
                elif name == "delete":
                    text = delete(g["marked"], eps, rng)
                elif name == "insert":
                    text = insert(g["marked"], eps, pool, rng)
                elif name == "homoglyph":
                    text = homoglyph(g["marked"], eps, rng)
                elif name == "whitespace":
                    text = whitespace(g["marked"], eps, rng)
                else:
                    ids = copy_paste(marked, human, COPY_PASTE[name], eps, len(g["marked_ids"]),
                                     rng)  # fmt: skip
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                out.append({"id": g["id"], "attack": name, "epsilon": eps, "text": text})
    return out
