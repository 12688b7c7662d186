"""Batched watermarked generation from a Hugging Face folder, and the attacks on its output."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from workflow.watermark.attacks import attack, copy_paste, delete, edited_positions, text_rng
from workflow.watermark.corpus import documents
from workflow.watermark.detect import score_many
from workflow.watermark.generate import complete, generation_kwargs, left_padded
from workflow.watermark.hf import vocabulary_size
from workflow.watermark.prompts import Prompt, cut

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
    vocab = vocabulary_size(tokenizer)
    for name in ("substitute", "delete", "insert"):
        means = []
        for epsilon in (0.0, 0.2, 0.4, 0.7):
            texts = [tokenizer.decode(attack(name, c.ids, epsilon, vocab, text_rng(c.id, 0)))
                     for c in marked]  # fmt: skip
            means.append(statistics.mean(z_of(texts, tokenizer)))
        print(name, np.round(means, 2))
        assert means == sorted(means, reverse=True) and means[-1] < means[0] / 2, (name, means)


def test_attacks_are_nested_and_sized():
    ids = list(range(100, 200))
    small = set(edited_positions(100, 0.1, text_rng("a", 0)).tolist())
    large = set(edited_positions(100, 0.3, text_rng("a", 0)).tolist())
    assert len(small) == 10 and len(large) == 30 and small < large
    assert small != set(edited_positions(100, 0.1, text_rng("b", 0)).tolist())
    assert len(delete(ids, 0.25, text_rng("a", 0))) == 75
    assert len(attack("insert", ids, 0.2, 1000, text_rng("a", 0))) == 120
    changed = attack("substitute", ids, 0.3, 50, text_rng("a", 0))  # replacements < 50
    assert sum(a != b for a, b in zip(ids, changed, strict=True)) == 30
    human = list(range(1000, 1100))
    pasted, start, stop = copy_paste(ids, human, 0.25, text_rng("a", 0))
    assert stop - start == 25 and pasted[start:stop] == ids[start:stop]
    assert pasted[:start] == human[:start] and pasted[stop:] == human[stop:]
    with pytest.raises(ValueError, match="unknown attack 'swap'"):
        attack("swap", ids, 0.1, 50, text_rng("a", 0))
    with pytest.raises(ValueError, match="epsilon must lie in"):
        delete(ids, 1.5, text_rng("a", 0))
