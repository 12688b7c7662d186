"""Vectorised watermark vs a plain per-token reference, transformers' port and hand maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.generation.logits_process import WatermarkLogitsProcessor as HFWatermark

from workflow.watermark import detect, greenlist, reference
from workflow.watermark.detect import TooShort
from workflow.watermark.processor import WatermarkLogitsProcessor

VOCAB = 1000
SCHEMES = ["lefthash", "selfhash"]
KEY = 15485863  # the reference's default hash key, written out rather than imported


def random_ids(n: int, seed: int, vocab: int = VOCAB, alphabet: int | None = None) -> list[int]:
    """Uniform ids, or ids from a few symbols so that n-grams repeat."""
    rng = np.random.default_rng(seed)
    if alphabet is None:
        return rng.integers(0, vocab, n).tolist()
    symbols = rng.choice(vocab, alphabet, replace=False)
    return symbols[rng.integers(0, alphabet, n)].tolist()


def plant_green(ids: list[int], n: int, gamma: float, scheme: str, seed: int) -> list[int]:
    """Append n tokens, each green given what precedes it (decided by the reference only)."""
    previous, _ = reference.SCHEMES[scheme]
    rng = np.random.default_rng(seed)
    out = list(ids)
    for _ in range(n):
        context = out[len(out) - previous :]
        token = next(
            int(t)
            for t in rng.permutation(VOCAB)
            if reference.is_green(context, int(t), VOCAB, gamma, scheme)
        )
        out.append(token)
    return out


def hf_processor(scheme: str, vocab: int, gamma: float, delta: float) -> HFWatermark:
    """transformers' independent port, set up to draw the reference's green lists."""
    if scheme == "lefthash":
        return HFWatermark(vocab, "cpu", gamma, delta, hashing_key=KEY, seeding_scheme="lefthash")
    # transformers seeds its hash table with the key; the reference seeds it with 2971215073
    proc = HFWatermark(vocab, "cpu", gamma, delta, 2971215073, "selfhash", context_width=4)
    proc.hash_key = KEY
    return proc


# 1. vectorised detection == per-token reference -------------------------------------------


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("prefix_len", [0, 7])
@pytest.mark.parametrize("gamma", [0.25, 0.5])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_counts_match_reference(scheme: str, gamma: float, prefix_len: int, ignore: bool) -> None:
    for seed, alphabet in [(1, None), (2, 3)]:
        ids = random_ids(150, seed, alphabet=alphabet)
        got = detect.score(
            ids, VOCAB, gamma, scheme, prefix_len=prefix_len, ignore_repeated_ngrams=ignore
        )
        green, total = reference.count_green(ids, VOCAB, gamma, scheme, KEY, prefix_len, ignore)
        assert (got.green, got.tokens) == (green, total)
        assert got.z == pytest.approx(reference.z_score(green, total, gamma))
    if ignore:  # the few-symbol text really has repeats, so de-duplication was exercised
        assert total < 150 - max(prefix_len, reference.SCHEMES[scheme][0])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_flags_match_reference_on_gpt2_sized_vocab(scheme: str) -> None:
    vocab = 50257
    ids = random_ids(40, 3, vocab=vocab)
    got = detect.green_flags(ids, vocab, 0.25, scheme, prefix_len=5)
    assert got.dtype == np.bool_
    assert got.tolist() == reference.flags(ids, vocab, 0.25, scheme, KEY, prefix_len=5)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_green_lists_match_transformers_port(scheme: str) -> None:
    sch = greenlist.scheme(scheme)
    hf = hf_processor(scheme, VOCAB, 0.25, 2.0)
    rng = torch.Generator().manual_seed(4)
    windows = torch.randint(-(10**9), 10**9, (50, sch.context_width), generator=rng)
    seeds = greenlist.prf_seeds(windows, sch, KEY)
    for window, seed in zip(windows, seeds.tolist(), strict=True):
        assert torch.equal(greenlist.green_list(seed, VOCAB, 0.25), hf._get_greenlist_ids(window))
    if scheme == "selfhash":  # int64 wraparound makes many seeds negative; both must agree there
        assert (seeds < 0).any()


def test_score_many_equals_single_scores() -> None:
    texts = [random_ids(n, seed) for seed, n in enumerate([80, 2, 120, 0, 50])]
    prefixes = [3, 0, 10, 0, 60]
    batch = detect.score_many(texts, VOCAB, 0.25, "selfhash", prefix_len=prefixes)
    for ids, prefix, got in zip(texts, prefixes, batch, strict=True):
        green, total = reference.count_green(ids, VOCAB, 0.25, "selfhash", KEY, prefix)
        assert (got.green, got.tokens) == (green, total)
        assert got.ok == (total > 0)
    assert [s.ok for s in batch] == [True, False, True, False, False]


# 2. hashing and seeds ----------------------------------------------------------------------


def test_hashint_python_equals_tensor() -> None:
    rng = np.random.default_rng(5)
    values = [0, 1, -1, 1_000_002, 1_000_003, -1_000_003, 2**62, -(2**62), 2**63 - 1, -(2**63)]
    values += rng.integers(-(2**62), 2**62, 200).tolist()
    tensor = greenlist.hashint(torch.tensor(values, dtype=torch.long)).tolist()
    assert tensor == [reference.hashint(v) for v in values]


def test_hash_table_matches_transformers_and_is_a_bijection() -> None:
    hf = HFWatermark(VOCAB, "cpu", hashing_key=2971215073, seeding_scheme="selfhash")
    assert torch.equal(greenlist.hash_table(), hf.fixed_table)
    size = 1_000_003
    hashed = greenlist.hashint(torch.arange(size))
    assert torch.equal(hashed.sort().values, torch.arange(1, size + 1))
    assert greenlist.hashint(torch.tensor([-1, 5 - size, 5 + 7 * size])).tolist() == [
        int(hashed[size - 1]),
        int(hashed[5]),
        int(hashed[5]),
    ]


def test_int64_wraparound_by_hand() -> None:
    assert reference.wrap_int64(2**63) == -(2**63)
    assert reference.wrap_int64(2**63 - 1) == 2**63 - 1
    assert reference.wrap_int64(2**64 + 5) == 5
    assert reference.wrap_int64(-1) == -1
    assert reference.wrap_int64(3 * 2**64 - 7) == -7
    # selfhash seed of a window, checked against numpy's (independently) wrapping int64 maths
    ids = [11, 222, 3333, 44444]
    hashed = np.array([reference.hashint(i) for i in ids], dtype=np.int64)
    expected = int((np.int64(KEY) * hashed * hashed[-1]).min())
    assert reference.seed(ids[:3], ids[3], "selfhash", KEY) == expected
    selfhash = greenlist.scheme("selfhash")
    assert int(greenlist.prf_seeds(torch.tensor(ids), selfhash, KEY)) == expected
    lefthash = greenlist.scheme("lefthash")
    assert int(greenlist.prf_seeds(torch.tensor([[42]]), lefthash, KEY)[0]) == 42 * KEY


def test_green_mask_size_and_cache() -> None:
    mask = greenlist.green_mask(-123, VOCAB, 0.25)
    assert mask.dtype == torch.bool and mask.shape == (VOCAB,)
    assert int(mask.sum()) == 250
    assert greenlist.green_mask(np.int64(-123), VOCAB, 0.25) is mask  # cached, any int type
    assert int(greenlist.green_mask(7, 999, 0.3).sum()) == int(999 * 0.3)
    assert (
        greenlist.SCHEMES["selfhash"].reference_name() == "ff-anchored_minhash_prf-4-True-15485863"
    )
    assert greenlist.SCHEMES["lefthash"].reference_name() == "ff-additive_prf-1-False-15485863"


# 3. the logits processor --------------------------------------------------------------------


def test_lefthash_processor_raises_exactly_the_green_ids() -> None:
    width = VOCAB + 3  # padded output layer: extra columns must never be biased
    ids = torch.tensor([random_ids(6, s) for s in range(3)])
    out = WatermarkLogitsProcessor(VOCAB, 0.25, 100.0, "lefthash")(ids, torch.zeros(3, width))
    for row, scores in zip(ids.tolist(), out, strict=True):
        raised = set(torch.nonzero(scores > 50).flatten().tolist())
        assert raised == reference.green_ids(reference.seed(row[-1:], 0, "lefthash"), VOCAB, 0.25)
    hf = hf_processor("lefthash", VOCAB, 0.25, 100.0)(ids, torch.zeros(3, VOCAB))
    assert torch.equal(out[:, :VOCAB], hf)


def test_selfhash_processor_raises_self_salted_green_candidates() -> None:
    proc = WatermarkLogitsProcessor(VOCAB, 0.25, 100.0, "selfhash")
    ids = torch.tensor([random_ids(9, s) for s in range(3)])
    scores = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(6))
    out = proc(ids, scores.clone())
    for row, before, after in zip(ids.tolist(), scores, out, strict=True):
        top = before.topk(40).indices.tolist()
        expected = {t for t in top if reference.is_green(row[-3:], t, VOCAB, 0.25, "selfhash")}
        assert set(torch.nonzero(after - before > 50).flatten().tolist()) == expected
    assert torch.allclose(out, hf_processor("selfhash", VOCAB, 0.25, 100.0)(ids, scores.clone()))
    # uniform logits: whichever candidates are chosen, each raised one is green for itself
    flat = proc(ids, torch.zeros(3, VOCAB))
    for row, scores_row in zip(ids.tolist(), flat, strict=True):
        raised = torch.nonzero(scores_row > 50).flatten().tolist()
        assert 0 < len(raised) <= 40
        assert all(reference.is_green(row[-3:], t, VOCAB, 0.25, "selfhash") for t in raised)


def test_processor_leaves_short_context_alone() -> None:
    proc = WatermarkLogitsProcessor(VOCAB, 0.25, 5.0, "selfhash")
    scores = torch.randn(2, VOCAB)
    assert torch.equal(proc(torch.tensor([[1, 2], [3, 4]]), scores), scores)


@pytest.fixture(scope="module")
def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=97,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=None,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def generate(model: GPT2LMHeadModel, proc: WatermarkLogitsProcessor | None, **kwargs) -> list:
    torch.manual_seed(1)
    prompt = torch.randint(0, 97, (2, 4))
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=60,
        min_new_tokens=60,
        logits_processor=LogitsProcessorList([proc] if proc else []),
        **kwargs,
    )
    return out.tolist()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", [{"do_sample": True}, {"do_sample": False, "num_beams": 4}])
def test_generation_is_detected(tiny_gpt2: GPT2LMHeadModel, scheme: str, mode: dict) -> None:
    proc = WatermarkLogitsProcessor(97, 0.25, 10.0, scheme)
    for row in generate(tiny_gpt2, proc, **mode):
        assert len(row) == 64
        assert detect.score(row, 97, 0.25, scheme, prefix_len=4).z > 4
        green, total = reference.count_green(row, 97, 0.25, scheme, KEY, prefix_len=4)
        assert total == 60 and reference.z_score(green, total, 0.25) > 4


def test_unwatermarked_generation_is_not_detected(tiny_gpt2: GPT2LMHeadModel) -> None:
    for row in generate(tiny_gpt2, None, do_sample=True):
        for scheme in SCHEMES:
            assert detect.score(row, 97, 0.25, scheme, prefix_len=4).z < 4


# 4. too short and bad names -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_too_short_raises_never_nan(scheme: str) -> None:
    lookback = reference.SCHEMES[scheme][0]
    for ids, prefix in [([], 0), (list(range(lookback)), 0), (list(range(10)), 10)]:
        with pytest.raises(TooShort, match="too short to score: 0 tokens") as info:
            detect.score(ids, VOCAB, 0.25, scheme, prefix_len=prefix)
        assert info.value.tokens == 0
        assert detect.green_flags(ids, VOCAB, 0.25, scheme, prefix_len=prefix).shape == (0,)
    with pytest.raises(TooShort, match=r"5 tokens after the prompt \(needs at least 10\)"):
        detect.score(list(range(5 + lookback)), VOCAB, 0.25, scheme, min_tokens=10)
    one = detect.score(list(range(1 + lookback)), VOCAB, 0.25, scheme)
    assert one.tokens == 1 and math.isfinite(one.z) and math.isfinite(one.p_value)
    marker = detect.score_many([[]], VOCAB, 0.25, scheme)[0]
    assert marker.z is None and marker.p_value is None and "too short" in marker.problem
    with pytest.raises(TooShort):
        detect.z_score(0, 0, 0.25)
    with pytest.raises(TooShort):
        detect.windowed_z(list(range(30)), VOCAB, 0.25, scheme, window=40)


def test_unknown_scheme_names_the_known_ones() -> None:
    message = r"unknown seeding scheme 'x' \(known: lefthash, selfhash\)"
    with pytest.raises(ValueError, match=message):
        greenlist.scheme("x")
    with pytest.raises(ValueError, match=message):
        detect.score([1, 2, 3], VOCAB, 0.25, "x")
    with pytest.raises(ValueError, match=message):
        WatermarkLogitsProcessor(VOCAB, 0.25, 2.0, "x")
    with pytest.raises(ValueError, match="gamma"):
        detect.score([1, 2, 3], VOCAB, 1.0, "lefthash")


# 5. windowed detection of a pasted span -----------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_windowed_z_finds_planted_span(scheme: str) -> None:
    head = random_ids(200, 7)
    text = plant_green(head, 60, 0.25, scheme, seed=8) + random_ids(200, 9)
    whole = detect.score(text, VOCAB, 0.25, scheme)
    best = detect.windowed_z(text, VOCAB, 0.25, scheme, window=60)
    assert best.z > whole.z and best.z > 8
    assert best.green == 60
    assert 190 <= best.start <= 200 and best.stop == best.start + 60
    assert best.offset == best.start - reference.SCHEMES[scheme][0]
    full = detect.windowed_z(text, VOCAB, 0.25, scheme, window=whole.tokens)
    assert full.z == pytest.approx(whole.z)


# 6. the z-score by hand ---------------------------------------------------------------------


def test_z_score_by_hand() -> None:
    # (50 - 25) / sqrt(100 * 3/16) = 25 / (5 * sqrt(3) / 2) = 10 / sqrt(3)
    assert detect.z_score(50, 100, 0.25) == pytest.approx(10 / math.sqrt(3))
    assert detect.z_score(25, 100, 0.25) == 0.0
    assert detect.z_score(3, 4, 0.5) == pytest.approx(1.0)  # (3 - 2) / sqrt(1)
    assert detect.z_score(0, 8, 0.5) == pytest.approx(-2 * math.sqrt(2))  # -4 / sqrt(2)
    assert detect.p_value(0.0) == 0.5
    assert detect.p_value(1.0) == pytest.approx(0.15865525393145707)  # standard normal tables
    assert detect.p_value(4.0) == pytest.approx(3.167124183311986e-05)
    assert detect.p_value(10.0) == pytest.approx(7.619853024160527e-24, rel=1e-6)
