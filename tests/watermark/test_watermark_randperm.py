"""Green lists drawn for many seeds at once (workflow/watermark/randperm.py) are torch's CPU
``randperm`` lists, and the processor and the detector give the same answers either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.watermark import reference
from workflow.watermark import greenlist
from workflow.watermark.processor import WatermarkLogitsProcessor
from workflow.watermark.randperm import mt19937, randperm_prefix

#: int64 edge cases (the reference takes seed % (2**64 - 1)) and ordinary seeds of both schemes
SEEDS = [0, 1, -1, -2, 2**32, 2**32 - 1, -(2**63), 2**63 - 1, 15485863 * 50256, -987654321987]


def cpu_list(seed: int, n: int, k: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed % (2**64 - 1))
    return torch.randperm(n, generator=generator)[:k]


@pytest.mark.parametrize(("n", "k"), [(2, 1), (7, 3), (100, 25), (1000, 999), (50257, 12564)])
def test_prefix_is_torch_randperm(n: int, k: int) -> None:
    got = randperm_prefix(torch.tensor(SEEDS), n, k)
    for row, seed in zip(got, SEEDS, strict=True):
        assert torch.equal(row, cpu_list(seed, n, k)), (seed, n, k)


def test_random_seeds_at_a_real_vocabulary() -> None:
    seeds = torch.randint(-(2**63), 2**63 - 1, (64,), generator=torch.Generator().manual_seed(1))
    got = randperm_prefix(seeds, 32000, 8000)  # Llama's vocabulary, gamma 0.25
    for row, seed in zip(got, seeds.tolist(), strict=True):
        assert torch.equal(row, cpu_list(seed, 32000, 8000))


def test_stream_is_numpy_mt19937() -> None:
    """The raw stream against another implementation: numpy's MT19937, seeded as init_genrand."""
    for word in (0, 5489, 2**32 - 1):
        bits = np.random.MT19937()
        bits._legacy_seeding(word)
        expected = bits.random_raw(1500).astype(np.int64)
        assert np.array_equal(mt19937(torch.tensor([word]), 1500)[0].numpy(), expected)


def test_k_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="0 <= k < n"):
        randperm_prefix(torch.tensor([1]), 10, 10)
    assert randperm_prefix(torch.tensor([1, 2]), 10, 0).shape == (2, 0)


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
def test_processor_scores_are_the_same_either_way(scheme: str) -> None:
    vocab, width = 1000, 1024  # a padded output layer: the extra columns stay unbiased
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (6, 12), generator=generator)
    scores = torch.randn(6, width, generator=generator)
    out = {
        draw: WatermarkLogitsProcessor(vocab, 0.25, 2.0, scheme, draw=draw)(ids, scores.clone())
        for draw in ("cpu", "vectorised")
    }
    assert torch.equal(out["cpu"], out["vectorised"])
    assert (out["cpu"] != scores).any() and torch.equal(out["cpu"][:, vocab:], scores[:, vocab:])


def test_is_green_is_the_same_either_way_and_the_references() -> None:
    vocab, gamma = 500, 0.3
    generator = torch.Generator().manual_seed(3)
    contexts = torch.randint(0, vocab, (40, 4), generator=generator)
    targets = torch.cat([contexts[:, -1], torch.tensor([vocab, -1])])  # two outside the vocab
    seeds = greenlist.prf_seeds(contexts, greenlist.scheme("selfhash"))
    seeds = torch.cat([seeds, seeds[:2]])
    cpu = greenlist.is_green(seeds, targets, vocab, gamma)
    assert torch.equal(greenlist.is_green(seeds, targets, vocab, gamma, vectorised=True), cpu)
    expected = [
        reference.is_green(row[:-1].tolist(), int(row[-1]), vocab, gamma, "selfhash")
        for row in contexts
    ]
    assert cpu[:40].tolist() == expected and not cpu[40:].any()


def test_draw_must_be_known() -> None:
    with pytest.raises(ValueError, match="draw must be one of"):
        WatermarkLogitsProcessor(100, 0.25, 2.0, "lefthash", draw="gpu")
