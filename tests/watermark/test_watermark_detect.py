"""Vectorised watermark vs a plain per-token reference, transformers' port and hand maths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.generation.logits_process import WatermarkLogitsProcessor as HFWatermark

from tests.watermark import reference
from tests.watermark.words import as_text, word_tokenizer
from workflow.common.errors import InputError
from workflow.watermark import detect, greenlist
from workflow.watermark.detect import TooShort
from workflow.watermark.processor import WatermarkLogitsProcessor
from workflow.watermark.records import read_attacked, read_generations, write_records
from workflow.watermark.scoring import read_scores, score_table

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
        green, total = reference.count_green(
            ids, VOCAB, gamma, scheme, key=KEY, prefix_len=prefix_len, ignore_repeated_ngrams=ignore
        )
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
        green, total = reference.count_green(
            ids, VOCAB, 0.25, "selfhash", key=KEY, prefix_len=prefix
        )
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
        green, total = reference.count_green(row, 97, 0.25, scheme, key=KEY, prefix_len=4)
        assert total == 60 and reference.z_score(green, total, 0.25) > 4


def test_unwatermarked_generation_is_not_detected(tiny_gpt2: GPT2LMHeadModel) -> None:
    for row in generate(tiny_gpt2, None, do_sample=True):
        for scheme in SCHEMES:
            assert detect.score(row, 97, 0.25, scheme, prefix_len=4).z < 4


class NinetyTokens:
    """A tokenizer of 90 ids for the 97-row tiny GPT-2: its output layer is padded by 7."""

    pad_token_id, eos_token_id = 0, None

    def get_vocab(self) -> dict[str, int]:
        return {str(i): i for i in range(90)}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, ids))


@pytest.mark.parametrize("watermark", [True, False])
def test_padded_output_rows_are_never_generated(tiny_gpt2: GPT2LMHeadModel, watermark: bool):
    """A random model spreads its bets over all 97 rows; ids 90..96 are no tokens, and
    detection would refuse them."""
    from workflow.watermark.generate import complete
    from workflow.watermark.prompts import Prompt

    prompts = [Prompt(f"p{i}", "", "", [i + 1, i + 2, i + 3], []) for i in range(4)]
    settings = {"decoding": "multinomial", "new_tokens": 50, "temperature": 2.0,
                "batch_size": 4, "gamma": 0.25, "delta": 2.0, "scheme": "lefthash"}  # fmt: skip
    completions, _ = complete(tiny_gpt2, NinetyTokens(), prompts, settings, watermark, seed=0)
    ids = [t for c in completions for t in c.ids]
    assert len(ids) == 200 and max(ids) < 90


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
    assert detect.winmax([True], 0.25) is None  # no window shorter than the whole


def test_unknown_scheme_names_the_known_ones() -> None:
    message = r"unknown seeding scheme 'x' \(known: lefthash, selfhash, unigram\)"
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
def test_winmax_finds_planted_span(scheme: str) -> None:
    head = random_ids(200, 7)
    text = plant_green(head, 60, 0.25, scheme, seed=8) + random_ids(200, 9)
    whole = detect.score(text, VOCAB, 0.25, scheme)
    flags = detect.green_flags(text, VOCAB, 0.25, scheme)
    best = detect.winmax(flags, 0.25)
    # the planted run of 60 greens is found, perhaps with a few chance greens beside it
    assert best.z > whole.z and best.z >= detect.z_score(60, 60, 0.25) - 1e-9
    assert 60 <= best.tokens <= 80


def test_winmax_by_brute_force() -> None:
    """Every run of every size from 1 to n - 1, written out."""
    rng = np.random.default_rng(4)
    for n in (2, 3, 17, 60):
        flags = (rng.random(n) < 0.4).tolist()
        by_size = {k: max(detect.z_score(sum(flags[i : i + k]), k, 0.25)
                          for i in range(n - k + 1)) for k in range(1, n)}  # fmt: skip
        got = detect.winmax(flags, 0.25)
        assert got.z == pytest.approx(max(by_size.values()))
        assert by_size[got.tokens] == pytest.approx(got.z)  # a size that reaches it


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


# 7. the detector's inputs: damage stops the stage with the file and line -------------------


def generation(i: int, n: int = 12) -> dict:
    ids = {"prompt": random_ids(8, i), "human": random_ids(n, i + 1),
           "marked": random_ids(n, i + 2), "plain": random_ids(n, i + 3)}  # fmt: skip
    return {"id": f"doc{i}", **{f"{k}_ids": v for k, v in ids.items()},
            **{k: as_text(v) for k, v in ids.items()}}  # fmt: skip


def attacked(i: int, attack: str = "substitute", epsilon: float = 0.2) -> dict:
    return {"id": f"doc{i}", "attack": attack, "epsilon": epsilon,
            "text": as_text(random_ids(12, i))}  # fmt: skip


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def input_error(call, path: Path, problem: str) -> None:
    """``call`` raises an InputError naming ``path`` whose problem starts with ``problem``."""
    with pytest.raises(InputError) as info:
        call()
    assert info.value.path == str(path)
    assert info.value.problem.startswith(problem), info.value.problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (["12", "x"], "'marked_ids' is not a list of integer token ids (item 0 is '12')"),
        ([1, 2.0], "'marked_ids' is not a list of integer token ids (item 1 is 2.0)"),
        ([True], "'marked_ids' is not a list of integer token ids (item 0 is True)"),
        ("1 2 3", "'marked_ids' is not a list of token ids"),
        (None, "'marked_ids' is not a list of token ids"),
        ([3, -5], "'marked_ids' holds token id -5, outside the tokenizer's vocabulary [0, 1000)"),
        ([999999999], "'marked_ids' holds token id 999999999, outside the tokenizer's vocabulary"),
        ([VOCAB], "'marked_ids' holds token id 1000, outside the tokenizer's vocabulary"),
    ],
)
def test_generation_token_ids_are_integers_in_the_vocabulary(
    tmp_path: Path, value: object, problem: str
) -> None:
    records = [generation(0), {**generation(1), "marked_ids": value}]
    write_records(tmp_path / "g.jsonl", records)
    input_error(lambda: read_generations(tmp_path / "g.jsonl", VOCAB), tmp_path / "g.jsonl",
                f"line 2: {problem}")  # fmt: skip


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"id": 3}, "line 1: 'id' is not a non-empty string"),
        ({"id": ""}, "line 1: 'id' is not a non-empty string"),
        ({"prompt_ids": ["a"]}, "line 1: 'prompt_ids' is not a list of integer token ids"),
        ({"plain": None}, "line 1: 'plain' is not a string"),
        ({"human_ids": None, "plain": None}, "line 1: 'human_ids' is not a list of token ids"),
    ],
)
def test_generation_fields_are_checked(tmp_path: Path, change: dict, problem: str) -> None:
    write_records(tmp_path / "g.jsonl", [{**generation(0), **change}])
    input_error(lambda: read_generations(tmp_path / "g.jsonl", VOCAB), tmp_path / "g.jsonl",
                problem)  # fmt: skip


def test_generation_without_a_field_or_not_an_object(tmp_path: Path) -> None:
    record = generation(0)
    del record["plain"]
    path = write_lines(tmp_path / "g.jsonl", [json.dumps(generation(1)), json.dumps(record)])
    input_error(
        lambda: read_generations(path), path, "line 2: not a generation record (no 'plain')"
    )
    write_lines(path, ["[1, 2]"])
    input_error(lambda: read_generations(path), path, "line 1: not a generation record (not a JSON")


def test_every_line_twice_is_a_duplicate_at_the_second_copy(tmp_path: Path) -> None:
    """The tester's damage: each record written twice would be scored twice."""
    lines = [json.dumps(generation(i)) for i in range(3)]
    path = write_lines(tmp_path / "g.jsonl", [line for line in lines for _ in (0, 1)])
    input_error(lambda: read_generations(path, VOCAB), path,
                "line 2: a second generation record of id 'doc0' (first on line 1)")  # fmt: skip
    write_lines(path, [*lines, lines[1]])
    input_error(lambda: read_generations(path, VOCAB), path,
                "line 4: a second generation record of id 'doc1' (first on line 2)")  # fmt: skip


def test_attacked_duplicates_within_and_across_files(tmp_path: Path) -> None:
    one, two = tmp_path / "a.jsonl", tmp_path / "p.jsonl"
    ids = {"doc0", "doc1"}
    write_records(one, [attacked(0), attacked(0, epsilon=0.5), attacked(1), attacked(0)])
    input_error(lambda: read_attacked([one], ids), one,
                "line 4: a second attacked text record of id 'doc0', attack 'substitute', "
                "epsilon 0.2 (first on line 1)")  # fmt: skip
    write_records(one, [attacked(0), attacked(1)])
    write_records(two, [attacked(0, "paraphrase"), attacked(1)])
    input_error(lambda: read_attacked([one, two], ids), two,
                f"line 2: a second attacked text record of id 'doc1', attack 'substitute', "
                f"epsilon 0.2 (first on {one} line 2)")  # fmt: skip
    assert len(read_attacked([one], ids)) == 2


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"id": "doc9"}, "'id' is 'doc9', which the generations file does not hold"),
        (
            {"attack": "none"},
            "'attack' is 'none', not one of substitute, delete, insert, homoglyph, "
            "whitespace, copy_paste, copy_paste_3, paraphrase",
        ),  # fmt: skip
        ({"epsilon": 1.5}, "'epsilon' is 1.5, not a number in [0, 1]"),
        ({"epsilon": "0.2"}, "'epsilon' is '0.2', not a number in [0, 1]"),
        ({"epsilon": None}, "'epsilon' is None, not a number in [0, 1]"),
        ({"text": [12, 5]}, "'text' is not a string"),
        ({"text": None}, "'text' is not a string"),
    ],
)
def test_attacked_fields_are_checked(tmp_path: Path, change: dict, problem: str) -> None:
    path = tmp_path / "a.jsonl"
    write_records(path, [attacked(0), {**attacked(0, epsilon=0.4), **change}])
    input_error(lambda: read_attacked([path], {"doc0"}), path, f"line 2: {problem}")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "doc0", "attack": "delete", "epsilon": 0', "not valid JSON (Expecting"),
        (
            '{"id": "doc0", "attack": "delete", "epsilon": NaN, "text": ""}',
            "not valid JSON (NaN is not a number)",
        ),  # fmt: skip
        (
            '{"id": "doc0", "id": "doc1", "attack": "delete", "epsilon": 0, "text": ""}',
            "not valid JSON (key 'id' appears twice)",
        ),  # fmt: skip
        ("[" * 100_000, "not valid JSON (nested too deeply)"),
    ],
)
def test_truncated_or_broken_last_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write_lines(tmp_path / "a.jsonl", [json.dumps(attacked(0))])
    path.write_text(path.read_text() + line)  # no newline: cut off mid-write
    input_error(lambda: read_attacked([path], {"doc0"}), path, f"line 2: {problem}")


def test_undecodable_missing_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_bytes(json.dumps(generation(0)).encode() + b"\n\xff\xfe{}\n")
    input_error(lambda: read_generations(path), path, "line 2: not UTF-8 text")
    write_lines(path, [json.dumps(generation(0)), "", json.dumps(generation(1))])
    input_error(lambda: read_generations(path), path, "line 2: not valid JSON (Expecting value)")
    input_error(lambda: read_generations(tmp_path / "none.jsonl"), tmp_path / "none.jsonl",
                "generation not found")  # fmt: skip
    path.write_text("")
    input_error(lambda: read_generations(path), path, "no generation records (empty file)")
    assert read_attacked([path], {"doc0"}) == []  # no attack configured is no damage


DETECT = {"lengths": [5, 5], "ignore_repeated_ngrams": False}
SETTINGS = {"gamma": 0.25, "scheme": "lefthash"}


@pytest.fixture
def scores(tmp_path: Path) -> pd.DataFrame:
    table = score_table([generation(i) for i in range(3)], [attacked(0), attacked(1, "copy_paste")],
                        SETTINGS, DETECT, word_tokenizer(VOCAB))  # fmt: skip
    table.to_parquet(tmp_path / "s.parquet", index=False)
    return table


def test_a_length_listed_twice_scores_once(tmp_path: Path, scores: pd.DataFrame) -> None:
    assert len(scores) == 3 * 3 * 2 + 2
    assert read_scores(tmp_path / "s.parquet").equals(scores)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (
            lambda t: pd.concat([t, t]),
            "row 21: a second row of id 'doc0', text 'marked', "
            "attack 'none', epsilon 0.0, length 12 (first: row 1)",
        ),
        (lambda t: t.drop(columns="winmax_z"), "not a score table (no column 'winmax_z')"),
        (lambda t: t.iloc[:0], "no rows (empty score table)"),
        (lambda t: t.assign(z=t.z > 0), "column 'z' is bool, not numeric"),
        (lambda t: t.astype({"length": float}), "column 'length' is float64, not integer"),
        (lambda t: t.assign(id=range(len(t))), "row 1: 'id' is 0, not a string"),
        (lambda t: t.assign(text="Marked"), "row 1: 'text' is 'Marked', not one of marked"),
        (lambda t: t.assign(attack="delete"), "row 1: 'attack' is 'delete', on a clean row"),
        (lambda t: t.assign(epsilon=math.nan), "row 1: 'epsilon' is nan, not a number in [0, 1]"),
        (lambda t: t.assign(green=t.tokens + 1), "row 1: 'green' is 12, more than 'draws'"),
        (lambda t: t.assign(draws=t.tokens - 1), "row 1: 'draws' is 10, fewer than 'tokens'"),
        (lambda t: t.assign(z=math.inf), "row 1: 'z' is inf, infinite"),
        (lambda t: t.assign(z=math.nan), "row 1: 'z' is nan, with no 'problem' given"),
        (lambda t: t[t.text != "human"], "no 'human' rows: not a whole detect output"),
    ],
)
def test_damaged_score_table_is_refused(
    tmp_path: Path, scores: pd.DataFrame, damage, problem: str
) -> None:
    path = tmp_path / "bad.parquet"
    damage(scores).to_parquet(path, index=False)
    input_error(lambda: read_scores(path), path, problem)
