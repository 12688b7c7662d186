"""The watermark stages as the rules run them: the chain on a tiny LM, and every bad input as
``error: <path>: <problem>`` with exit status 2 and no traceback (or a counted skip)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_script
from workflow.common.errors import InputError
from workflow.watermark.corpus import c4_records, documents
from workflow.watermark.hf import load_tokenizer
from workflow.watermark.records import RawLine, write_records

SCRIPT = "scripts/watermark.py"
STAGES = ("demo", "lm", "prompts", "generate", "attack", "paraphrase", "detect", "evaluate",
          "figures")  # fmt: skip
PROMPTS = {"completion_tokens": 40, "min_prompt_tokens": 20, "max_prompt_tokens": 60, "n": 6}
GENERATE = {"new_tokens": 40, "batch_size": 6, "gamma": 0.25, "delta": 4.0}
ATTACKS = {"substitute": [0.2, 0.6], "delete": [], "insert": [], "homoglyph": [],
           "whitespace": [], "copy_paste": [0.5], "copy_paste_3": [0.1]}  # fmt: skip
DETECT = {"lengths": [10]}
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
         "--info", paths["info"], "--oracle", model, "--attacked", paths["attacked"],
         paths["paraphrased"], "--settings", settings, "--detect", json.dumps(DETECT),
         "--metrics", paths["metrics"], "--dataset", "d", "--experiment", "e"),
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
    assert len(attacked) == 6 * 4  # two substitution rates, CP-1 and CP-3
    paraphrased = [json.loads(line) for line in chain["paraphrased"].read_text().splitlines()]
    assert len(paraphrased) == 6 and {p["attack"] for p in paraphrased} == {"paraphrase"}
    tokenizer = load_tokenizer(chain["model"])
    for p in paraphrased:  # about half the tokens changed, in the generator's tokens
        marked = next(g for g in generations if g["id"] == p["id"])["marked_ids"]
        ids = tokenizer(p["text"], add_special_tokens=False)["input_ids"]
        changed = sum(a != b for a, b in zip(ids, marked, strict=False))
        assert changed >= 10 and "ids" not in p
    scores = pd.read_parquet(chain["scores"])
    # 3 texts whole and cut to 10 tokens, 24 attacked, 6 paraphrased
    assert len(scores) == 6 * 3 * 2 + 24 + 6
    assert set(scores.attack) == {"none", "substitute", "copy_paste", "copy_paste_3",
                                  "paraphrase"}  # fmt: skip
    record = json.loads(chain["metrics"].read_text())
    assert record["track"] == "watermark" and record["metrics"]["tpr"] >= 0.8
    attacks = record["extra"]["curves"]["attacks"]
    # every attacked text is read by the oracle: substituting 60% of the words costs meaning
    substitute = attacks["substitute"]
    assert substitute["0.0"]["similarity"] == 1.0
    assert 1.0 > substitute["0.2"]["similarity"] > substitute["0.6"]["similarity"] > 0
    assert substitute["0.6"]["ppl"] > substitute["0.0"]["ppl"] > 1
    assert all("ppl" in p and "similarity" in p for c in attacks.values() for p in c.values())
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
    generations[0]["marked_ids"], generations[0]["marked"] = [], ""
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


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def set_field(records: list[dict], line: int, key: str, value) -> list[dict]:
    records[line - 1][key] = value
    return records


#: The tester's damage: (file damaged, how, the error's problem).
DAMAGE = {
    "string ids": ("generations", lambda r: set_field(r, 3, "marked_ids", ["12", "x"]),
                   "line 3: 'marked_ids' is not a list of integer token ids (item 0 is '12')"),
    "negative id": ("generations", lambda r: set_field(r, 2, "plain_ids", [3, -5]),
                    "line 2: 'plain_ids' holds token id -5, outside the tokenizer's vocabulary"),
    "ids, not text": ("attacked", lambda r: set_field(r, 2, "text", [5, 6]),
                      "line 2: 'text' is not a string"),
    "huge id": ("generations", lambda r: set_field(r, 1, "human_ids", [999999999]),
                "line 1: 'human_ids' holds token id 999999999, outside the tokenizer's "),
    "every line twice": ("generations", lambda r: [x for x in r for _ in (0, 1)],
                         "line 2: a second generation record of id "),
}  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE)
def test_detect_refuses_damaged_records(chain, tmp_path, damage):
    """Each damage the tester planted ends as one error line naming the file and line, and no
    score table."""
    which, change, problem = DAMAGE[damage]
    paths = {k: tmp_path / f"{k}.jsonl" for k in ("generations", "attacked")}
    for key, path in paths.items():
        records = read_lines(chain[key])
        write_records(path, change(records) if key == which else records)
    out = tmp_path / "s.parquet"
    result = wm("detect", "--generations", paths["generations"], "--attacked", paths["attacked"],
                "--model", chain["model"], "--settings", json.dumps(GENERATE),
                "--detect", json.dumps(DETECT), "--out", out)  # fmt: skip
    assert_input_error(result, f"error: {paths[which]}: {problem}")
    assert not out.exists() and not list(tmp_path.glob("*.parquet*"))


def test_evaluate_refuses_a_score_table_with_rows_twice(chain, tmp_path):
    scores = tmp_path / "s.parquet"
    table = pd.read_parquet(chain["scores"])
    pd.concat([table, table]).to_parquet(scores, index=False)
    metrics = tmp_path / "m.json"
    result = wm("evaluate", "--scores", scores, "--generations", chain["generations"],
                "--settings", json.dumps(GENERATE), "--detect", json.dumps(DETECT),
                "--metrics", metrics, "--dataset", "d", "--experiment", "e")  # fmt: skip
    assert_input_error(result, f"error: {scores}: row {len(table) + 1}: a second row of id ")
    assert not metrics.exists()


def test_evaluate_refuses_a_broken_speed_record(chain, tmp_path):
    info = tmp_path / "generation.json"
    info.write_text('{"tokens_per_s_marked": 12')
    result = wm("evaluate", "--scores", chain["scores"], "--generations", chain["generations"],
                "--info", info, "--settings", json.dumps(GENERATE),
                "--detect", json.dumps(DETECT), "--metrics", tmp_path / "m.json",
                "--dataset", "d", "--experiment", "e")  # fmt: skip
    assert_input_error(result, f"error: {info}: not a generation speed record: ")
    assert not (tmp_path / "m.json").exists()


def test_prompt_ids_stay_unique(chain, tmp_path):
    """A repeated document URL (C4 has some) gets ``#2``: every later stage keys records by
    id; a prompts file with an id twice is refused."""
    from workflow.watermark.hf import load_tokenizer
    from workflow.watermark.prompts import make_prompts, prompts_jsonl, read_prompts

    docs = [dict(r, url="https://news.example/same") for r in c4_records(documents(3, 5), 5)]
    write_records(tmp_path / "docs.jsonl", docs)
    prompts, _ = make_prompts([tmp_path / "docs.jsonl"], load_tokenizer(chain["model"]),
                              {**PROMPTS, "n": 3}, "fail")  # fmt: skip
    ids = [p.id for p in prompts]
    assert len(ids) >= 2 and ids[:2] == ["https://news.example/same", "https://news.example/same#2"]
    path = tmp_path / "prompts.jsonl"
    path.write_text(prompts_jsonl(prompts) + prompts_jsonl(prompts[:1]))
    with pytest.raises(InputError, match=f"line {len(ids) + 1}: a second prompt record of id"):
        read_prompts(path)


def test_speed_record_numbers_are_checked(tmp_path):
    from workflow.watermark.records import read_speed_record

    info = tmp_path / "generation.json"
    record = {"tokens_per_s_marked": 5.0, "tokens_per_s_plain": 6.0, "slowdown": 0.2,
              "train_wall_time_s": "3 s", "device": "cpu"}  # fmt: skip
    info.write_text(json.dumps(record))
    with pytest.raises(InputError, match="'train_wall_time_s' is '3 s', not a number"):
        read_speed_record(info)
    info.write_text(json.dumps({**record, "train_wall_time_s": 3}))
    assert read_speed_record(info)["train_wall_time_s"] == 3


def test_figures_refuse_another_tracks_metrics(chain, tmp_path):
    other = tmp_path / "metrics.json"
    record = json.loads(chain["metrics"].read_text())
    other.write_text(json.dumps({**record, "track": "distance", "extra": {}}))
    result = wm("figures", "--metrics", other, "--scores", chain["scores"], "--out", tmp_path)
    assert_input_error(result, str(other), "not a watermark run's metrics.json")
