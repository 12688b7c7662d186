"""The watermark stages as the rules run them: the chain on a tiny LM, and every bad input as
``error: <path>: <problem>`` with exit status 2 and no traceback (or a counted skip)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_script
from workflow.watermark.corpus import c4_records, documents
from workflow.watermark.records import RawLine, write_records

SCRIPT = "scripts/watermark.py"
STAGES = ("demo", "lm", "prompts", "generate", "attack", "paraphrase", "detect", "evaluate",
          "figures")  # fmt: skip
PROMPTS = {"completion_tokens": 40, "min_prompt_tokens": 20, "max_prompt_tokens": 60, "n": 6}
GENERATE = {"new_tokens": 40, "batch_size": 6, "gamma": 0.25, "delta": 4.0}
ATTACKS = {"substitute": [0.2, 0.6], "delete": [], "insert": [], "copy_paste": [0.5]}
DETECT = {"lengths": [10], "window": 10}
PARAPHRASE = {"epsilons": [0.5], "batch_size": 4}


def wm(*args: str | Path, check: bool = False):
    return run_script(SCRIPT, *args, check=check)


def assert_input_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture(scope="module")
def chain(tiny_lm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """documents -> prompts -> generations -> attacked -> scores -> metrics by the CLI."""
    _, _, model = tiny_lm
    out = tmp_path_factory.mktemp("chain")
    docs = out / "docs.json.gz"
    records: list = c4_records(documents(8, seed=11), seed=11)
    records.insert(2, RawLine("{not json"))
    write_records(docs, records)
    paths = {"model": model, "docs": docs, "prompts": out / "prompts.jsonl",
             "generations": out / "generations.jsonl", "info": out / "generation.json",
             "attacked": out / "attacked.jsonl", "paraphrased": out / "paraphrased.jsonl",
             "scores": out / "scores.parquet",
             "metrics": out / "metrics.json"}  # fmt: skip
    settings = json.dumps(GENERATE)
    for args in (
        ("prompts", "--documents", docs, "--model", model, "--settings", json.dumps(PROMPTS),
         "--out", paths["prompts"]),
        ("generate", "--prompts", paths["prompts"], "--model", model, "--settings", settings,
         "--out", paths["generations"], "--info", paths["info"]),
        ("attack", "--generations", paths["generations"], "--model", model,
         "--attacks", json.dumps(ATTACKS), "--out", paths["attacked"]),
        ("paraphrase", "--generations", paths["generations"], "--model", model,
         "--paraphraser", model, "--settings", json.dumps(PARAPHRASE),
         "--out", paths["paraphrased"]),
        ("detect", "--generations", paths["generations"], "--attacked", paths["attacked"],
         paths["paraphrased"], "--model", model, "--settings", settings,
         "--detect", json.dumps(DETECT), "--out", paths["scores"]),
        ("evaluate", "--scores", paths["scores"], "--generations", paths["generations"],
         "--info", paths["info"], "--oracle", model, "--settings", settings,
         "--detect", json.dumps(DETECT), "--metrics", paths["metrics"], "--dataset", "d",
         "--experiment", "e"),
    ):  # fmt: skip
        wm(*args, check=True)
    return paths


def test_every_stage_has_help():
    for stage in STAGES:
        result = wm(stage, "--help", check=True)
        assert "usage:" in result.stdout and stage in result.stdout


def test_chain_writes_what_the_next_stage_reads(chain):
    counts = json.loads(chain["prompts"].with_suffix(".counts.json").read_text())
    assert counts["bad_lines"] == 1 and counts["kept"] == 6  # the broken line was skipped
    assert "line 3: not valid JSON" in chain["prompts"].with_suffix(".skipped.tsv").read_text()
    generations = [json.loads(line) for line in chain["generations"].read_text().splitlines()]
    assert len(generations) == 6
    assert all(len(g["marked_ids"]) == len(g["plain_ids"]) == 40 for g in generations)
    attacked = [json.loads(line) for line in chain["attacked"].read_text().splitlines()]
    assert len(attacked) == 6 * 3  # two substitution rates and one copy-paste
    paraphrased = [json.loads(line) for line in chain["paraphrased"].read_text().splitlines()]
    assert len(paraphrased) == 6 and {p["attack"] for p in paraphrased} == {"paraphrase"}
    for p in paraphrased:  # about half the tokens changed, in the generator's tokens
        marked = next(g for g in generations if g["id"] == p["id"])["marked_ids"]
        changed = sum(a != b for a, b in zip(p["ids"], marked, strict=False))
        assert changed >= 10 and p["text"]
    scores = pd.read_parquet(chain["scores"])
    # 3 texts whole and cut to 10 tokens, 18 attacked, 6 paraphrased
    assert len(scores) == 6 * 3 * 2 + 18 + 6
    assert set(scores.attack) == {"none", "substitute", "copy_paste", "paraphrase"}
    record = json.loads(chain["metrics"].read_text())
    assert record["track"] == "watermark" and record["metrics"]["tpr"] >= 0.8
    assert record["metrics"]["fpr_human"] == 0.0 and record["extra"]["texts"] == 6
    info = json.loads(chain["info"].read_text())
    assert info["tokens_per_s_marked"] > 0 and info["device"] == "cpu"


def test_malformed_document_line_fails_under_fail(chain, tmp_path):
    result = wm("prompts", "--documents", chain["docs"], "--model", chain["model"],
                "--settings", json.dumps(PROMPTS), "--out", tmp_path / "p.jsonl",
                "--on-bad-sample", "fail")  # fmt: skip
    assert_input_error(result, str(chain["docs"]), "line 3: not valid JSON")
    assert not (tmp_path / "p.jsonl").exists()


def test_documents_too_short_for_any_prompt(chain, tmp_path):
    docs = tmp_path / "short.jsonl"
    write_records(docs, [{"text": "Too short."}] * 3)
    result = wm("prompts", "--documents", docs, "--model", chain["model"],
                "--settings", json.dumps(PROMPTS), "--out", tmp_path / "p.jsonl")  # fmt: skip
    assert_input_error(result, str(docs), "no document gives a prompt of at least 20 tokens")


def test_too_short_text_is_reported_not_nan(chain, tmp_path):
    """An empty completion (a model that stopped at once) has no z: the table says why and
    evaluation counts it as not detected."""
    generations = [json.loads(line) for line in chain["generations"].read_text().splitlines()]
    generations[0]["marked_ids"] = []
    write_records(tmp_path / "g.jsonl", generations)
    write_records(tmp_path / "a.jsonl", [])
    wm("detect", "--generations", tmp_path / "g.jsonl", "--attacked", tmp_path / "a.jsonl",
       "--model", chain["model"], "--settings", json.dumps(GENERATE),
       "--detect", json.dumps(DETECT), "--out", tmp_path / "s.parquet", check=True)  # fmt: skip
    scores = pd.read_parquet(tmp_path / "s.parquet")
    short = scores[scores.problem != ""]
    assert len(short) == 1 and short.z.isna().all()
    assert short.problem.iloc[0].startswith("too short to score: 0 tokens")
    wm("evaluate", "--scores", tmp_path / "s.parquet", "--generations", tmp_path / "g.jsonl",
       "--settings", json.dumps(GENERATE), "--detect", json.dumps(DETECT),
       "--metrics", tmp_path / "m.json", "--dataset", "d", "--experiment", "e",
       check=True)  # fmt: skip
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["tpr"] <= 5 / 6 and all(v == v for v in metrics.values())  # no nan


def test_tokenizer_larger_than_the_model_vocabulary(chain, tmp_path):
    """Another model's tokenizer in the folder: ids beyond the model's embedding rows."""
    from transformers import AutoTokenizer

    model = shutil.copytree(chain["model"], tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_tokens([f"extra{i}" for i in range(5)])
    tokenizer.save_pretrained(model)
    result = wm("generate", "--prompts", chain["prompts"], "--model", model,
                "--settings", json.dumps(GENERATE), "--out", tmp_path / "g.jsonl",
                "--info", tmp_path / "i.json")  # fmt: skip
    assert_input_error(result, str(model), "tokens but the model's vocabulary is 512")
    assert not (tmp_path / "g.jsonl").exists()


def test_unknown_seeding_scheme(chain, tmp_path):
    result = wm("generate", "--prompts", chain["prompts"], "--model", chain["model"],
                "--settings", json.dumps({**GENERATE, "scheme": "minhash"}),
                "--out", tmp_path / "g.jsonl", "--info", tmp_path / "i.json")  # fmt: skip
    assert_input_error(result, "--settings", "minhash")


def test_malformed_generations_line(chain, tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_text(chain["generations"].read_text().splitlines()[0] + '\n{"id": \n')
    result = wm("attack", "--generations", bad, "--model", chain["model"],
                "--attacks", json.dumps(ATTACKS), "--out", tmp_path / "a.jsonl")  # fmt: skip
    assert_input_error(result, str(bad), "line 2: not valid JSON")


def test_prompt_plus_completion_beyond_the_model(chain, tmp_path):
    result = wm("generate", "--prompts", chain["prompts"], "--model", chain["model"],
                "--settings", json.dumps({**GENERATE, "new_tokens": 600}),
                "--out", tmp_path / "g.jsonl", "--info", tmp_path / "i.json")  # fmt: skip
    assert_input_error(result, str(chain["prompts"]), "beyond the model's 512 positions")


def test_missing_model_folder(chain, tmp_path):
    result = wm("detect", "--generations", chain["generations"], "--attacked", chain["attacked"],
                "--model", tmp_path / "nope", "--settings", json.dumps(GENERATE),
                "--out", tmp_path / "s.parquet")  # fmt: skip
    assert_input_error(result, str(tmp_path / "nope"), "model folder not found")


def test_damaged_score_table(chain, tmp_path):
    bad = tmp_path / "scores.parquet"
    bad.write_bytes(chain["scores"].read_bytes()[:100])
    result = wm("figures", "--metrics", chain["metrics"], "--scores", bad, "--out", tmp_path)
    assert_input_error(result, str(bad), "not a score table")
