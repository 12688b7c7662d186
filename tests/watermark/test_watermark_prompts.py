"""Documents -> prompts + human completions, with a real byte-level BPE tokenizer."""

from __future__ import annotations

import gzip
import json

import pytest

from workflow.common.errors import BadSample, InputError, Skips
from workflow.watermark.corpus import c4_records, documents
from workflow.watermark.lm import train_tokenizer
from workflow.watermark.prompts import make_prompts, prompts_jsonl, read_documents, read_prompts
from workflow.watermark.records import write_records

SETTINGS = {"completion_tokens": 40, "min_prompt_tokens": 20, "max_prompt_tokens": 60, "n": 5}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(documents(30, seed=3), vocab_size=512)


@pytest.fixture
def docs(tmp_path):
    texts = documents(8, seed=4)
    path = tmp_path / "c4.jsonl"
    write_records(path, c4_records(texts, seed=4))
    return path, texts


def test_the_last_tokens_are_the_completion_and_the_prompt_precedes_them(tokenizer, docs):
    path, texts = docs
    prompts, counts = make_prompts([path], tokenizer, SETTINGS, "fail")
    assert len(prompts) == 5 and counts.as_dict() == {
        "documents": 5, "too_short": 0, "kept": 5, "bad_lines": 0,
    }  # fmt: skip
    for prompt, text in zip(prompts, texts, strict=False):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert prompt.completion_ids == ids[-40:]
        assert prompt.prompt_ids == ids[:-40][-60:]  # the latest 60 prompt tokens
        assert text.endswith(prompt.completion) and prompt.prompt in text
        assert prompt.id.startswith("https://")
    assert read_prompts_roundtrip(prompts, path.parent / "prompts.jsonl") == prompts


def read_prompts_roundtrip(prompts, path):
    path.write_text(prompts_jsonl(prompts))
    return read_prompts(path)


def test_short_documents_are_passed_over_and_counted(tokenizer, tmp_path):
    texts = documents(3, seed=5)
    short = " ".join(texts[0].split()[:8])  # far fewer than 40 + 20 tokens
    path = tmp_path / "c4.jsonl.gz"
    with gzip.open(path, "wt") as out:
        for text in (short, texts[1], "", texts[2]):
            out.write(json.dumps({"text": text}) + "\n")
    prompts, counts = make_prompts([path], tokenizer, SETTINGS, "fail")
    assert counts.as_dict() == {"documents": 4, "too_short": 2, "kept": 2, "bad_lines": 0}
    assert [p.id for p in prompts] == ["c4.jsonl.gz:2", "c4.jsonl.gz:4"]


def test_malformed_lines_follow_on_bad_sample(tokenizer, docs):
    path, _ = docs
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:25]  # truncated JSON
    lines[3] = json.dumps({"url": "x"})  # no text
    path.write_text("\n".join(lines) + "\n")
    prompts, counts = make_prompts([path], tokenizer, {**SETTINGS, "n": 100}, "skip")
    assert counts.as_dict() == {"documents": 6, "too_short": 0, "kept": 6, "bad_lines": 2}
    problems = [row[2] for row in counts.skipped.rows]
    assert (
        problems[0].startswith("line 2: not valid JSON")
        and problems[1] == 'line 4: no "text" string'
    )
    with pytest.raises(BadSample, match="line 2: not valid JSON"):
        list(read_documents(path, "fail", Skips()))


def test_missing_or_undecodable_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="documents file not found"):
        list(read_documents(tmp_path / "none.jsonl", "skip", Skips()))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"text": "a"}\n' * 50)[:40])
    with pytest.raises(InputError, match="not a readable JSONL file"):
        list(read_documents(broken, "skip", Skips()))
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"id": "a"}\n')
    with pytest.raises(InputError, match="line 1: not a prompt record"):
        read_prompts(bad)
