"""Text-in detection (workflow/watermark/textdetect.py, ``scripts/watermark.py detect --text``)
and the normalisers that undo string-level attacks (workflow/watermark/normalize.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.conftest import run_script
from workflow.watermark.corpus import documents
from workflow.watermark.detect import TooShort, score
from workflow.watermark.generate import complete
from workflow.watermark.hf import vocabulary_size
from workflow.watermark.normalize import category, homoglyphs, normalize, unicode
from workflow.watermark.prompts import cut
from workflow.watermark.textdetect import detect_text, text_ids

SETTINGS = {
    "gamma": 0.25, "delta": 3.0, "scheme": "lefthash", "decoding": "multinomial",
    "temperature": 0.7, "num_beams": 4, "new_tokens": 80, "batch_size": 4, "key": 15485863,
}  # fmt: skip
DETECT = {"z_threshold": 4.0, "ignore_repeated_ngrams": False, "normalizers": []}
CYRILLIC = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441"}


def test_unicode_normaliser_by_hand():
    # NFC (e + combining acute -> e-acute), invisible and odd spaces -> one space, Cc dropped
    assert unicode("cafe\u0301 \u200bau\u00a0\u00a0lait\n\tnow\ufeff!") == "café au laitnow !"
    assert unicode("a\u2009b\u3000c\ufe0fd") == "a b c d"
    assert unicode("plain text stays") == "plain text stays"


def test_homoglyph_normaliser_maps_other_scripts_back():
    text = "the quick brown fox"
    attacked = "".join(CYRILLIC.get(c, c) if i % 3 == 0 else c for i, c in enumerate(text))
    assert attacked != text and category("\u043e") == "CYRILLIC"
    assert homoglyphs(attacked) == text
    # a text that is mostly Cyrillic keeps its script: the Latin letters are the odd ones
    russia = "\u0440\u043e\u0441\u0441\u0438\u044f"
    assert homoglyphs(f"{russia} o") == f"{russia} \u043e"
    assert homoglyphs("") == "" and homoglyphs("12, 34!") == "12, 34!"
    with pytest.raises(ValueError, match="unknown normaliser 'truecase'"):
        normalize("x", ["truecase"])


@pytest.fixture(scope="module")
def texts(tiny_lm):
    """(watermarked, plain) completions as text, each as a reader would receive it."""
    model, tokenizer, _ = tiny_lm
    prompts = [cut(f"d{i}", t, tokenizer, 80, 20, 30) for i, t in enumerate(documents(6, seed=5))]
    marked, _ = complete(model, tokenizer, prompts, SETTINGS, watermark=True, seed=0)
    plain, _ = complete(model, tokenizer, prompts, SETTINGS, watermark=False, seed=0)
    return [c.text for c in marked], [c.text for c in plain]


def test_text_in_detection_flags_watermarked_text_only(tiny_lm, texts):
    _, tokenizer, _ = tiny_lm
    marked, plain = texts
    for text in marked:
        verdict = detect_text(text, tokenizer, SETTINGS, DETECT)
        # what it scored is the text's own tokens, every one after the first
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert verdict.tokens == len(ids) - 1
        expected = score(ids, vocabulary_size(tokenizer), 0.25, "lefthash")
        assert (verdict.green, verdict.z) == (expected.green, expected.z)
        assert verdict.watermarked and verdict.z > 4
    assert not any(detect_text(t, tokenizer, SETTINGS, DETECT).watermarked for t in plain)


def spaced(text: str) -> str:
    """A zero-width space after every space: invisible to a reader, new tokens to a tokenizer."""
    return text.replace(" ", " \u200b")


def glyphs(text: str) -> str:
    """Every other a/e/o/p/c as its Cyrillic twin: the same text to a reader."""
    out, swap = [], False
    for c in text:
        if c in CYRILLIC:
            swap = not swap
            c = CYRILLIC[c] if swap else c
        out.append(c)
    return "".join(out)


@pytest.mark.parametrize(("attack", "normaliser"), [(spaced, "unicode"), (glyphs, "homoglyphs")])
def test_normaliser_undoes_its_string_attack(tiny_lm, texts, attack, normaliser):
    _, tokenizer, _ = tiny_lm
    marked, _ = texts
    with_it = {**DETECT, "normalizers": [normaliser]}
    for text in marked:
        attacked = attack(text)
        assert text_ids(attacked, tokenizer, []) != text_ids(text, tokenizer, [])
        clean = detect_text(text, tokenizer, SETTINGS, DETECT)
        assert detect_text(attacked, tokenizer, SETTINGS, DETECT).z < clean.z - 2  # it works...
        # ...and is undone: the attacked text normalises to what the clean one does
        assert normalize(attacked, [normaliser]) == normalize(text, [normaliser])
        restored = detect_text(attacked, tokenizer, SETTINGS, with_it)
        assert restored == replace(
            detect_text(text, tokenizer, SETTINGS, with_it), characters=len(attacked)
        )
        assert restored.watermarked


def test_cli_prints_the_verdict_for_a_file_and_stdin(tiny_lm, texts, tmp_path):
    _, tokenizer, folder = tiny_lm
    marked, plain = texts
    (tmp_path / "marked.txt").write_text(marked[0])
    settings = ["--model", str(folder), "--settings", json.dumps({"gamma": 0.25,
                "scheme": "lefthash"})]  # fmt: skip
    out = run_script("scripts/watermark.py", "detect", "--text", tmp_path / "marked.txt",
                     *settings).stdout  # fmt: skip
    expected = detect_text(marked[0], tokenizer, SETTINGS, DETECT)
    assert f"z: {expected.z:.2f}" in out and "verdict: WATERMARKED (z > 4)" in out
    assert f"tokens scored: {expected.tokens}; green: {expected.green}" in out
    result = run_script("scripts/watermark.py", "detect", "--text", "-", "--json", *settings,
                        input=plain[0])  # fmt: skip
    verdict = json.loads(result.stdout)
    assert verdict["watermarked"] is False and verdict["normalizers"] == []
    assert verdict["z"] == pytest.approx(detect_text(plain[0], tokenizer, SETTINGS, DETECT).z)


def test_cli_errors_are_one_line(tiny_lm, tmp_path):
    _, _, folder = tiny_lm
    base = ["scripts/watermark.py", "detect", "--model", str(folder)]
    missing = run_script(*base, "--text", tmp_path / "nope.txt", check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.txt'}: text file not found"
    (tmp_path / "short.txt").write_text("a")
    short = run_script(*base, "--text", tmp_path / "short.txt", check=False)
    assert short.returncode == 2 and "too short to score" in short.stderr
    assert "Traceback" not in short.stderr
    neither = run_script(*base, check=False)
    assert neither.returncode == 2 and "give --text FILE" in neither.stderr


def test_text_of_one_token_is_too_short(tiny_lm):
    _, tokenizer, _ = tiny_lm
    with pytest.raises(TooShort):
        detect_text("a", tokenizer, SETTINGS, DETECT)
