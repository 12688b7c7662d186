"""SynthID-Text through transformers: generation marks, the Mean-score z-test is calibrated on
text it did not write, and repeated contexts are scored once."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from workflow.watermark.corpus import documents
from workflow.watermark.detect import z_score
from workflow.watermark.generate import complete
from workflow.watermark.prompts import cut
from workflow.watermark.schemes import SYNTHID_DEPTH, SYNTHID_NGRAM, SynthID, scheme_of

SETTINGS = {
    "gamma": 0.25, "delta": 2.0, "scheme": "synthid", "decoding": "multinomial",
    "temperature": 0.7, "num_beams": 4, "new_tokens": 48, "batch_size": 6,
}  # fmt: skip


def z_of(scheme: SynthID, texts: list[list[int]]) -> list[float]:
    return [z_score(int(h.sum()), h.numel(), 0.5, SYNTHID_DEPTH)
            for h in scheme.hits(texts, repeated_once=False)]  # fmt: skip


def test_null_z_is_standard_normal_on_random_text() -> None:
    """Text SynthID did not write: its g-values are fair coins, so z ~ N(0, 1)."""
    scheme = scheme_of(SETTINGS, 1000)
    rng = np.random.default_rng(0)
    z = z_of(scheme, [rng.integers(0, 1000, 120).tolist() for _ in range(300)])
    assert abs(statistics.mean(z)) < 0.2 and 0.8 < statistics.stdev(z) < 1.2, (
        statistics.mean(z), statistics.stdev(z))  # fmt: skip


def test_repeated_contexts_count_once_and_short_texts_score_nothing() -> None:
    scheme = scheme_of(SETTINGS, 1000)
    once = list(range(10, 30))
    hits = scheme.hits([once, once * 3, once[: SYNTHID_NGRAM - 1]], repeated_once=False)
    assert hits[0].numel() == len(once) - (SYNTHID_NGRAM - 1)
    # the copies add only the n - 1 contexts that reach from one copy into the next (the last
    # four tokens of a copy, then three straddling), and those only the first time
    assert hits[1].numel() == hits[0].numel() + (SYNTHID_NGRAM - 1)
    assert hits[2].numel() == 0
    assert all(0 <= int(h.min()) and int(h.max()) <= SYNTHID_DEPTH for h in hits[:2])


def test_keys_follow_the_run_key() -> None:
    assert SynthID({"key": 1}).keys == SynthID({"key": 1}).keys != SynthID({"key": 2}).keys
    assert len(SynthID({"key": 1}).keys) == SYNTHID_DEPTH


@pytest.fixture(scope="module")
def prompts(tiny_lm):
    _, tokenizer, _ = tiny_lm
    cuts = [cut(f"doc{i}", text, tokenizer, 48, 20, 40)
            for i, text in enumerate(documents(6, seed=13))]  # fmt: skip
    assert all(cuts)
    return cuts


def test_generated_text_is_found_and_plain_text_is_not(tiny_lm, prompts) -> None:
    model, tokenizer, _ = tiny_lm
    marked, _ = complete(model, tokenizer, prompts, SETTINGS, watermark=True, seed=0)
    plain, _ = complete(model, tokenizer, prompts, SETTINGS, watermark=False, seed=0)
    scheme = scheme_of(SETTINGS, len(tokenizer))
    read = lambda cs: [tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in cs]  # noqa: E731
    z_marked, z_plain = z_of(scheme, read(marked)), z_of(scheme, read(plain))
    print("marked", np.round(z_marked, 1), "plain", np.round(z_plain, 1))
    assert min(z_marked) > 4 > max(z_plain)


def test_texts_scored_together_as_one_by_one() -> None:
    """Texts of one length share a batch: each still gets its own g-values and mask."""
    scheme = scheme_of(SETTINGS, 1000)
    rng = np.random.default_rng(1)
    texts = [rng.integers(0, 1000, int(n)).tolist() for n in rng.integers(30, 34, 12)]
    texts[3] = texts[3][:10] * 3  # a repeating one beside the others
    together = scheme.hits(texts, repeated_once=False)
    for text, hits in zip(texts, together, strict=True):
        assert torch.equal(hits, scheme.hits([text], repeated_once=False)[0])
