"""Unigram-Watermark (Zhao et al. 2023): one fixed green list, checked by hand-written maths."""

from __future__ import annotations

import math

import numpy as np
import torch

from workflow.watermark import detect
from workflow.watermark.processor import WatermarkLogitsProcessor

VOCAB, GAMMA, KEY = 500, 0.5, 15485863


def fixed_green() -> set[int]:
    """The green list written out: torch's CPU permutation of the key, first gamma * V ids."""
    rng = torch.Generator().manual_seed(KEY)
    return set(torch.randperm(VOCAB, generator=rng)[: int(GAMMA * VOCAB)].tolist())


def test_generation_biases_one_list_at_every_position() -> None:
    processor = WatermarkLogitsProcessor(VOCAB, GAMMA, 3.0, "unigram", key=KEY)
    contexts = torch.tensor([[1, 2, 3], [400, 7, 9], [5, 5, 5]])
    biased = processor(contexts, torch.zeros(3, VOCAB))
    green = fixed_green()
    for row in biased:
        assert {int(i) for i in torch.nonzero(row == 3.0)} == green
        assert int((row == 0.0).sum()) == VOCAB - len(green)


def test_every_token_is_scored_and_z_is_the_one_proportion_test() -> None:
    green = sorted(fixed_green())
    red = sorted(set(range(VOCAB)) - set(green))
    rng = np.random.default_rng(0)
    ids = [int(t) for t in rng.permutation(green[:30] + red[:10])]
    result = detect.score(ids, VOCAB, GAMMA, "unigram", key=KEY)
    # no context: the first token is scored too
    assert (result.tokens, result.green) == (40, 30)
    assert math.isclose(result.z, (30 - 0.5 * 40) / math.sqrt(40 * 0.25))


def test_unique_tokens_as_the_papers_detector() -> None:
    green = sorted(fixed_green())
    red = sorted(set(range(VOCAB)) - set(green))
    ids = [green[0]] * 20 + red[:5]  # one green token repeated cannot make a text green
    once = detect.score(ids, VOCAB, GAMMA, "unigram", key=KEY, ignore_repeated_ngrams=True)
    every = detect.score(ids, VOCAB, GAMMA, "unigram", key=KEY)
    assert (once.tokens, once.green) == (6, 1)
    assert (every.tokens, every.green) == (25, 20)
