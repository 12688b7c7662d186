"""Batched watermarked generation from a Hugging Face folder, and the attacks on its output."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from workflow.watermark.attacks import (
    WORD_ATTACKS,
    attack_records,
    copy_paste,
    delete,
    edited_positions,
    homoglyph,
    insert,
    join_words,
    span_starts,
    split_words,
    substitute,
    text_rng,
    whitespace,
)
from workflow.watermark.corpus import documents
from workflow.watermark.detect import score_many
from workflow.watermark.generate import complete, generation_kwargs, left_padded
from workflow.watermark.hf import vocabulary_size
from workflow.watermark.prompts import Prompt, cut
from workflow.watermark.textdetect import text_ids

SETTINGS = {
    "gamma": 0.25, "delta": 2.0, "scheme": "lefthash", "decoding": "multinomial",
    "temperature": 0.7, "num_beams": 4, "new_tokens": 48, "batch_size": 4,
}  # fmt: skip


@pytest.fixture(scope="module")
def prompts(tiny_lm) -> list[Prompt]:
    _, tokenizer, _ = tiny_lm
    cuts = [cut(f"doc{i}", text, tokenizer, 48, 20, 30 + 3 * i)  # prompts of unequal length
            for i, text in enumerate(documents(10, seed=11))]  # fmt: skip
    assert all(cuts)
    return cuts


def z_of(texts: list[str], tokenizer, repeated_once: bool = False) -> list[float]:
    """What a detector sees: the text alone, tokenised again."""
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    vocab = vocabulary_size(tokenizer)
    return [
        s.z for s in score_many(ids, vocab, 0.25, "lefthash", ignore_repeated_ngrams=repeated_once)
    ]


@pytest.mark.parametrize("decoding", ["multinomial", "beam"])
def test_watermarked_completions_are_detected_and_plain_ones_are_not(tiny_lm, prompts, decoding):
    model, tokenizer, _ = tiny_lm
    settings = {**SETTINGS, "decoding": decoding}
    # beam search on a tiny LM loops ("the city of the city of..."): a repeated green n-gram
    # would count many times, in plain text too, so it is counted once (the paper's remedy)
    repeated_once = decoding == "beam"
    marked, rate = complete(model, tokenizer, prompts, settings, watermark=True, seed=0)
    plain, _ = complete(model, tokenizer, prompts, settings, watermark=False, seed=0)
    assert [c.id for c in marked] == [p.id for p in prompts] and rate > 0
    assert all(len(c.ids) == 48 for c in marked + plain)  # exactly T new tokens each
    z_marked, z_plain = (
        z_of([c.text for c in marked], tokenizer, repeated_once),
        z_of([c.text for c in plain], tokenizer, repeated_once),
    )
    print(decoding, "marked z", np.round(z_marked, 1), "plain z", np.round(z_plain, 1))
    assert min(z_marked) > max(z_plain)
    # few distinct n-grams are left of a looping beam: a weaker (still clear) separation
    assert statistics.mean(z_marked) > (
        4 if decoding == "multinomial" else statistics.mean(z_plain) + 2
    )
    assert max(z_plain) < 4


def test_generation_is_seeded(tiny_lm, prompts):
    model, tokenizer, _ = tiny_lm
    first, _ = complete(model, tokenizer, prompts[:4], SETTINGS, watermark=True, seed=3)
    again, _ = complete(model, tokenizer, prompts[:4], SETTINGS, watermark=True, seed=3)
    other, _ = complete(model, tokenizer, prompts[:4], SETTINGS, watermark=True, seed=4)
    assert first == again and first != other


def test_left_padding_gives_each_prompt_its_own_continuation(tiny_lm, prompts):
    model, tokenizer, _ = tiny_lm
    settings = {**SETTINGS, "decoding": "beam", "num_beams": 2, "new_tokens": 12}
    batched, _ = complete(model, tokenizer, prompts[:3], settings, watermark=True, seed=0)
    alone = [complete(model, tokenizer, [p], settings, watermark=True, seed=0)[0][0]
             for p in prompts[:3]]  # fmt: skip
    assert [c.ids for c in batched] == [c.ids for c in alone]
    ids, mask = left_padded(prompts[:2], pad_id=0)
    assert mask[0].sum() == len(prompts[0].prompt_ids) and mask[:, -1].all()
    assert ids[1, -len(prompts[1].prompt_ids) :].tolist() == prompts[1].prompt_ids


def test_unknown_decoding_is_named():
    with pytest.raises(ValueError, match=r"unknown decoding 'greedy' \(known: multinomial, beam\)"):
        generation_kwargs({**SETTINGS, "decoding": "greedy"}, pad_id=0)


def test_attack_curves_fall_with_epsilon(tiny_lm, prompts):
    model, tokenizer, _ = tiny_lm
    marked, _ = complete(model, tokenizer, prompts, SETTINGS, watermark=True, seed=0)
    generations = [{"id": c.id, "marked": c.text, "marked_ids": c.ids, "human": p.completion}
                   for c, p in zip(marked, prompts, strict=True)]  # fmt: skip
    rates = (0.0, 0.2, 0.4, 0.7)
    records = attack_records(generations, dict.fromkeys(WORD_ATTACKS, rates), tokenizer, 0)
    assert [r["text"] for r in records if r["epsilon"] == 0.0] == [c.text for c in marked] * 3
    for name in WORD_ATTACKS:
        means = [statistics.mean(z_of([r["text"] for r in records
                                       if (r["attack"], r["epsilon"]) == (name, eps)], tokenizer))
                 for eps in rates]  # fmt: skip
        print(name, np.round(means, 2))
        # at 70% of words: substitution 8.4 -> 1.6, deletion -> 3.5, insertion -> 4.7 (the
        # words left keep their own tokens' contexts; an inserted word only dilutes them)
        assert means == sorted(means, reverse=True) and means[-1] < 0.6 * means[0], (name, means)


def test_string_attacks_break_tokens_and_the_normalisers_undo_them(tiny_lm, prompts):
    """What a reader cannot see still changes every token it touches; the reference's
    normalisers map it back, and detection sees the clean text again."""
    model, tokenizer, _ = tiny_lm
    marked, _ = complete(model, tokenizer, prompts, SETTINGS, watermark=True, seed=0)
    vocab = vocabulary_size(tokenizer)
    for name, normalizer in (("homoglyph", "homoglyphs"), ("whitespace", "unicode")):
        attacked = [homoglyph(c.text, 0.5, text_rng(c.id, 0)) if name == "homoglyph"
                    else whitespace(c.text, 0.5, text_rng(c.id, 0)) for c in marked]  # fmt: skip
        assert all(a != c.text for a, c in zip(attacked, marked, strict=True))
        z = {}
        for steps in ([], [normalizer]):
            for kind, texts in (("clean", [c.text for c in marked]), ("attacked", attacked)):
                ids = [text_ids(t, tokenizer, steps) for t in texts]
                z[kind, bool(steps)] = statistics.mean(s.z for s in score_many(
                    ids, vocab, 0.25, "lefthash"))  # fmt: skip
        print(name, {k: round(v, 2) for k, v in z.items()})
        assert z["attacked", False] < z["clean", False] - 1  # the attack works unnormalised
        assert z["attacked", True] == pytest.approx(z["clean", True])  # and is undone


WORDS = " ".join(f"w{i}" for i in range(100))


def test_word_attacks_are_nested_sized_and_keep_the_spacing():
    small = set(edited_positions(100, 0.1, text_rng("a", 0)).tolist())
    large = set(edited_positions(100, 0.3, text_rng("a", 0)).tolist())
    assert len(small) == 10 and len(large) == 30 and small < large
    assert small != set(edited_positions(100, 0.1, text_rng("b", 0)).tolist())
    pool = ["X", "Y"]
    assert len(delete(WORDS, 0.25, text_rng("a", 0)).split()) == 75
    inserted = insert(WORDS, 0.2, pool, text_rng("a", 0)).split()
    assert len(inserted) == 120 and [w for w in inserted if w not in pool] == WORDS.split()
    changed = substitute(WORDS, 0.3, pool, text_rng("a", 0)).split()
    assert sum(a != b for a, b in zip(WORDS.split(), changed, strict=True)) == 30
    # nested: the words 30% changes include those 10% changes
    ten = substitute(WORDS, 0.1, pool, text_rng("a", 0)).split()
    assert {i for i, w in enumerate(ten) if w in pool} < {i for i, w in enumerate(changed)
                                                          if w in pool}  # fmt: skip
    text = "  A line\nand  another.\n"
    assert substitute(text, 0.0, pool, text_rng("a", 0)) == text
    assert delete(text, 0.0, text_rng("a", 0)) == text
    words, spaces = split_words(text)
    assert words == ["A", "line", "and", "another."] and join_words(words, spaces) == text
    with pytest.raises(ValueError, match="epsilon must lie in"):
        delete(WORDS, 1.5, text_rng("a", 0))


def test_copy_paste_spans_as_the_reference():
    """CP-n-x%: n non-overlapping spans of int(x * T) tokens, same positions in both texts."""
    marked, human = list(range(100, 300)), list(range(1000, 1200))
    for seed in range(20):
        for spans, fraction in ((1, 0.25), (3, 0.1), (3, 0.33)):
            pasted = copy_paste(marked, human, spans, fraction, 200, text_rng(str(seed), 0))
            copied = [i for i, t in enumerate(pasted) if t < 1000]
            length = int(fraction * 200)
            assert len(pasted) == 200 and len(copied) == spans * length
            assert all(pasted[i] == marked[i] for i in copied)  # at the same position
            runs = np.split(np.array(copied), np.flatnonzero(np.diff(copied) > 1) + 1)
            # adjacent spans may touch; a run is then a multiple of one span
            assert all(len(r) % length == 0 for r in runs) and copied[-1] < 199
    starts = [span_starts(10, 2, 3, text_rng(str(s), 0)) for s in range(200)]
    # every placement of 2 spans of 3 ending before 10 (a, b >= a + 3, b + 3 < 10) appears
    assert {tuple(s) for s in starts} == {(a, b) for a in range(10) for b in range(a + 3, 7)}
    with pytest.raises(ValueError, match="3 spans of 70 tokens do not fit in 200"):
        span_starts(200, 3, 70, text_rng("a", 0))
    with pytest.raises(ValueError, match="unknown attack 'swap'"):
        attack_records([], {"swap": [0.1]}, None, 0)
