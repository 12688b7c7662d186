"""A run's score table, its metrics and attack curves, attack records, and the demo dataset,
on hand-made token ids (no LM needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from workflow.common.errors import Skips
from workflow.watermark.attacks import attack_records
from workflow.watermark.demo import write_demo
from workflow.watermark.detect import score
from workflow.watermark.evaluate import run_metrics
from workflow.watermark.prompts import read_documents
from workflow.watermark.scoring import score_table

VOCAB = 200
SETTINGS = {"gamma": 0.25, "scheme": "lefthash", "key": 15485863}
DETECT = {"lengths": [5, 20], "window": 8, "ignore_repeated_ngrams": False}


def generations(n: int = 4, length: int = 30) -> list[dict]:
    rng = np.random.default_rng(0)
    ids = lambda k: rng.integers(0, VOCAB, size=k).tolist()  # noqa: E731
    return [{"id": f"doc{i}", "prompt_ids": ids(12), "human_ids": ids(length),
             "marked_ids": ids(length), "plain_ids": ids(length)} for i in range(n)]  # fmt: skip


def test_table_scores_every_text_whole_cut_and_attacked():
    gens = generations()
    attacked = attack_records(gens, {"substitute": [0.5], "copy_paste": [0.5]}, VOCAB, seed=0)
    table = score_table(gens, attacked, SETTINGS, DETECT, VOCAB)
    assert len(table) == 4 * 3 * 3 + 8  # 3 texts x (whole, 5, 20 tokens) + 8 attacked
    for row in table.itertuples():
        g = next(g for g in gens if g["id"] == row.id)
        ids = (next(a["ids"] for a in attacked if a["id"] == row.id and a["attack"] == row.attack)
               if row.text == "attacked" else g[f"{row.text}_ids"][: row.length])  # fmt: skip
        expected = score(g["prompt_ids"] + ids, VOCAB, 0.25, "lefthash",
                         prefix_len=len(g["prompt_ids"]))  # fmt: skip
        assert (row.tokens, row.green) == (expected.tokens, expected.green)
        assert row.z == pytest.approx(expected.z)
        windowed = (row.text != "attacked" and row.length == 30) or row.attack == "copy_paste"
        assert math.isnan(row.window_z) != windowed


def test_metrics_and_curves_of_a_hand_made_table():
    rows = []
    for i, (marked, plain, human) in enumerate([(9.0, 0.5, -1.0), (6.0, 4.5, 0.0),
                                                 (math.nan, 1.0, 2.0)]):  # fmt: skip
        for text, z in (("marked", marked), ("plain", plain), ("human", human)):
            rows.append({"id": f"d{i}", "text": text, "attack": "none", "epsilon": 0.0,
                         "length": 200, "z": z, "window_z": math.nan})  # fmt: skip
        rows.append({"id": f"d{i}", "text": "marked", "attack": "none", "epsilon": 0.0,
                     "length": 50, "z": 2.0 + i, "window_z": math.nan})  # fmt: skip
        for eps, z in ((0.2, 5.0 - i), (0.5, 1.0)):
            rows.append({"id": f"d{i}", "text": "attacked", "attack": "delete", "epsilon": eps,
                         "length": 150, "z": z, "window_z": math.nan})  # fmt: skip
    metrics, curves = run_metrics(pd.DataFrame(rows), threshold=4.0)
    assert metrics["tpr"] == pytest.approx(2 / 3)  # the unscorable one is missed
    assert metrics["fpr_plain"] == pytest.approx(1 / 3) and metrics["fpr_human"] == 0.0
    # z 2, 3, 4: none above 4 (z at the threshold is not flagged: the reference's z > 4)
    assert curves["z_vs_length"] == {50: {"z_mean": 3.0, "tpr": 0.0},
                                     200: {"z_mean": 7.5, "tpr": 2 / 3}}  # fmt: skip
    delete = curves["attacks"]["delete"]
    assert list(delete) == ["0.0", "0.2", "0.5"]
    # z 5, 4, 3: only 5 is above 4
    assert delete["0.2"] == {"tpr": 1 / 3, "z_mean": 4.0} and delete["0.5"]["tpr"] == 0.0


def test_attack_records_are_nested_in_epsilon():
    gens = generations(n=3, length=40)
    records = attack_records(gens, {"substitute": [0.1, 0.3, 0.6]}, VOCAB, seed=1)
    for g in gens:
        edited = [{i for i, (a, b) in enumerate(zip(r["ids"], g["marked_ids"], strict=True))
                   if a != b} for r in records if r["id"] == g["id"]]  # fmt: skip
        assert edited[0] <= edited[1] <= edited[2] and len(edited[2]) <= 24
    with pytest.raises(ValueError, match="unknown attack 'paraphrase'"):
        attack_records(gens, {"paraphrase": [0.1]}, VOCAB, seed=1)


def test_demo_documents_plant_short_and_broken_lines(tmp_path):
    settings = {"documents": 5, "short_documents": 2, "bad_lines": 1, "seed": 1}
    manifest = write_demo(tmp_path, settings)
    assert manifest["records"] == 7 and manifest["bad_lines"] == 1
    skips = Skips()
    docs = list(read_documents(tmp_path / manifest["documents"][0], "skip", skips))
    assert len(docs) == 7 and len(skips) == 1
    assert sum(len(text.split()) <= 30 for _, text in docs) == 2
    again = tmp_path / "again"
    write_demo(again, settings)  # seeded: the same bytes of text
    assert list(read_documents(again / manifest["documents"][0], "skip", Skips())) == docs
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
