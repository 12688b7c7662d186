"""The watermark demo's data: generated corpus and C4 records, the demo LM trained on the shared
scaffold, published as a Hugging Face folder, reloaded, watermarked and detected; resume and
broken model folders; the shared optimiser schedule."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessorList

from tests.conftest import history
from tests.watermark.conftest import TINY
from workflow.common.errors import InputError
from workflow.common.target import RunTarget
from workflow.watermark.corpus import c4_records, documents
from workflow.watermark.detect import score_many
from workflow.watermark.hf import load_lm
from workflow.watermark.lm import EOS, LM_DEFAULTS, lm_settings, train_lm, train_tokenizer
from workflow.watermark.processor import WatermarkLogitsProcessor
from workflow.watermark.records import write_records

GAMMA, DELTA = 0.25, 2.0


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test of this module on one thread (the fixture is in conftest.py)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict:
    """One epoch, then a second call with three epochs on the same run folder (a resume),
    each publishing to the same model folder. (After two epochs the val perplexity depends
    on the batch order: 49 to 111 over seeds 0-2 of a straight run, more after a resume whose
    first call decayed its lr to 0; a third epoch makes the check below about learning, not
    about one order.)"""
    root = tmp_path_factory.mktemp("lm")
    run, out = root / "run", root / "model"
    docs = documents(60, seed=3)
    first = train_lm(docs, {**TINY, "max_epochs": 1}, RunTarget(run, out))
    (out / "stale.txt").write_text("from the first run")
    second = train_lm(docs, {**TINY, "max_epochs": 3}, RunTarget(run, out))
    return {"run": run, "out": out, "first": first, "second": second}


# -- corpus -------------------------------------------------------------------------------------
def test_documents_are_seeded() -> None:
    docs = documents(6, seed=1)
    assert docs == documents(6, seed=1)
    assert docs[:3] == documents(3, seed=1)  # document i depends only on (seed, i)
    assert len(set(docs)) == 6
    assert not set(docs) & set(documents(6, seed=2))
    assert all("\n" in d for d in docs)  # paragraphs, as C4 text


def test_documents_fit_prompt_completion_and_positions() -> None:
    """Every document holds a >= 50-token prompt plus a 200-token completion, and the whole
    of it fits the LM's positions."""
    tokenizer = train_tokenizer(documents(150, seed=0), LM_DEFAULTS["vocab_size"])
    encoded = tokenizer.backend_tokenizer.encode_batch(documents(150, seed=8))
    lengths = [len(e.ids) for e in encoded]
    print(f"tokens per document: {min(lengths)}-{max(lengths)}")
    assert min(lengths) >= 200 + 100
    assert max(lengths) <= LM_DEFAULTS["n_positions"]


def test_c4_records(tmp_path: Path) -> None:
    texts = documents(5, seed=0)
    records = c4_records(texts, seed=0)
    assert records == c4_records(texts, seed=0)
    assert [r["text"] for r in records] == texts
    assert len({r["url"] for r in records}) == 5
    for r in records:
        assert set(r) == {"text", "timestamp", "url"}
        assert r["url"].startswith("https://news.example/")
        assert dt.datetime.fromisoformat(r["timestamp"]).year == 2019
    path = tmp_path / "c4" / "part.jsonl"
    write_records(path, records)
    assert [json.loads(line) for line in path.read_text().splitlines()] == records
    assert sorted(p.name for p in path.parent.iterdir()) == ["part.jsonl"]


# -- training, publication, resume --------------------------------------------------------------
def test_train_publishes_and_resumes(trained: dict) -> None:
    run, out, first, second = trained["run"], trained["out"], trained["first"], trained["second"]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "stale.txt" not in names  # the second run replaced the folder, not merged into it
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert first["resumed_from_epoch"] is None
    assert second["resumed_from_epoch"] == 0
    assert [h["epoch"] for h in history(run)] == [0, 1, 2]  # epoch 0 was not trained again
    print({k: first[k] for k in ("val_loss", "val_ppl", "parameters", "train_tokens")})
    print({k: second[k] for k in ("val_loss", "val_ppl", "best_epoch", "wall_time_s")})
    assert second["val_loss"] < first["val_loss"]
    assert second["val_ppl"] == pytest.approx(math.exp(second["val_loss"]))
    assert second["val_ppl"] < TINY["vocab_size"] / 4  # learnt more than a uniform guess
    assert second["vocab_size"] == TINY["vocab_size"]


def test_reloaded_model_carries_a_detectable_watermark(trained: dict) -> None:
    model, tokenizer = load_lm(trained["out"])
    assert tokenizer.eos_token == EOS and tokenizer.pad_token == EOS
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    vocab = len(tokenizer)
    prompts = [e.ids[:30] for e in tokenizer.backend_tokenizer.encode_batch(documents(8, 99))]
    mask = torch.ones(len(prompts), 30, dtype=torch.long)

    def z_scores(watermark: bool) -> list[float]:
        torch.manual_seed(0)
        bias = [WatermarkLogitsProcessor(vocab, GAMMA, DELTA, "lefthash")] if watermark else []
        with torch.no_grad():
            out = model.generate(
                torch.tensor(prompts), attention_mask=mask,
                max_new_tokens=60, min_new_tokens=60, do_sample=True, temperature=0.7, top_k=0,
                logits_processor=LogitsProcessorList(bias),
            )  # fmt: skip
        scores = score_many(out.tolist(), vocab, GAMMA, "lefthash", prefix_len=30)
        return [s.z for s in scores]

    marked, plain = z_scores(True), z_scores(False)
    mean_marked, mean_plain = sum(marked) / len(marked), sum(plain) / len(plain)
    print(f"z watermarked {mean_marked:.2f} (min {min(marked):.2f}), "
          f"unwatermarked {mean_plain:.2f} (max {max(plain):.2f})")  # fmt: skip
    assert mean_marked > mean_plain + 3
    assert mean_marked > 4 > max(plain)


# -- bad model folders ----------------------------------------------------------------------------
def test_load_lm_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="model folder not found") as err:
        load_lm(tmp_path / "nowhere")
    assert err.value.path == str(tmp_path / "nowhere")


def test_load_lm_without_config(trained: dict, tmp_path: Path) -> None:
    folder = tmp_path / "tokenizer_only"
    AutoTokenizer.from_pretrained(trained["out"]).save_pretrained(folder)
    with pytest.raises(InputError, match="no config.json") as err:
        load_lm(folder)
    assert err.value.path == str(folder)


def test_load_lm_vocabulary_mismatch(trained: dict, tmp_path: Path) -> None:
    folder = shutil.copytree(trained["out"], tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([f"extra{i}" for i in range(5)])
    tokenizer.save_pretrained(folder)
    vocab = TINY["vocab_size"]
    problem = f"tokenizer has {vocab + 5} tokens but the model's vocabulary is {vocab}"
    with pytest.raises(InputError, match=problem) as err:
        load_lm(folder)
    assert err.value.path == str(folder)


def test_load_lm_truncated_weights(trained: dict, tmp_path: Path) -> None:
    folder = shutil.copytree(trained["out"], tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match="cannot load the model"):
        load_lm(folder)


def test_settings_reject_typos_and_short_positions() -> None:
    with pytest.raises(ValueError, match="unknown LM settings"):
        lm_settings({"n_layers": 4})
    with pytest.raises(ValueError, match="exceeds n_positions"):
        lm_settings({"block_size": 1024, "n_positions": 512})
