"""A run's score table, its metrics and attack curves, attack records, and the demo dataset,
on hand-made texts whose words are token ids (no LM needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tests.watermark.words import as_text, word_tokenizer
from workflow.common.errors import Skips
from workflow.watermark.attacks import attack_records
from workflow.watermark.demo import write_demo
from workflow.watermark.detect import score
from workflow.watermark.evaluate import calibrated_threshold, run_metrics
from workflow.watermark.prompts import read_documents
from workflow.watermark.scoring import score_table

VOCAB = 200
SETTINGS = {"gamma": 0.25, "scheme": "lefthash", "key": 15485863}
DETECT = {"lengths": [5, 20], "ignore_repeated_ngrams": False}
TOKENIZER = word_tokenizer(VOCAB)


def generations(n: int = 4, length: int = 30) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ids = {
            t: rng.integers(0, VOCAB, size=length).tolist() for t in ("human", "marked", "plain")
        }
        out.append({"id": f"doc{i}", **{f"{t}_ids": v for t, v in ids.items()},
                    **{t: as_text(v) for t, v in ids.items()}})  # fmt: skip
    return out


def test_table_scores_every_text_as_text_whole_cut_and_attacked():
    gens = generations()
    attacked = attack_records(gens, {"substitute": [0.5], "copy_paste": [0.5]}, TOKENIZER, seed=0)
    table = score_table(gens, attacked, SETTINGS, DETECT, TOKENIZER)
    assert len(table) == 4 * 3 * 3 + 8  # 3 texts x (whole, 5, 20 tokens) + 8 attacked
    for row in table.itertuples():
        g = next(g for g in gens if g["id"] == row.id)
        text = (next(a["text"] for a in attacked if a["id"] == row.id and a["attack"] == row.attack)
                if row.text == "attacked" else g[row.text])  # fmt: skip
        ids = [int(word[1:]) for word in text.split()][: row.length]  # the words' own ids
        expected = score(ids, VOCAB, 0.25, "lefthash")  # the text alone: its first is context
        assert (
            (row.tokens, row.green)
            == (expected.tokens, expected.green)
            == (row.length - 1, row.green)
        )
        assert row.z == pytest.approx(expected.z)
        windowed = row.text == "attacked" or row.length == 30
        assert math.isnan(row.winmax_z) != windowed and (row.winmax_tokens > 0) == windowed


def test_metrics_and_curves_of_a_hand_made_table():
    rows = []
    for i, (marked, plain, human) in enumerate([(9.0, 0.5, -1.0), (6.0, 4.5, 0.0),
                                                 (math.nan, 1.0, 2.0)]):  # fmt: skip
        for text, z in (("marked", marked), ("plain", plain), ("human", human)):
            rows.append({"id": f"d{i}", "text": text, "attack": "none", "epsilon": 0.0,
                         "length": 200, "z": z, "winmax_z": z + 1})  # fmt: skip
        rows.append({"id": f"d{i}", "text": "marked", "attack": "none", "epsilon": 0.0,
                     "length": 50, "z": 2.0 + i, "winmax_z": math.nan})  # fmt: skip
        for eps, z in ((0.2, 5.0 - i), (0.5, 1.0)):
            rows.append({"id": f"d{i}", "text": "attacked", "attack": "delete", "epsilon": eps,
                         "length": 150, "z": z, "winmax_z": z + 2})  # fmt: skip
    metrics, curves = run_metrics(pd.DataFrame(rows), threshold=4.0, fpr=0.01)
    assert metrics["tpr"] == pytest.approx(2 / 3)  # the unscorable one is missed
    assert metrics["fpr_plain"] == pytest.approx(1 / 3) and metrics["fpr_human"] == 0.0
    # WinMax of marked 10, 7, unscorable against 1.5, 5.5, 2, 0, 1, 3: 12 of 18 pairs
    assert metrics["auc_winmax"] == pytest.approx(2 / 3)
    # z 2, 3, 4: none above 4 (z at the threshold is not flagged: the reference's z > 4)
    assert curves["z_vs_length"] == {50: {"z_mean": 3.0, "tpr": 0.0},
                                     200: {"z_mean": 7.5, "tpr": 2 / 3}}  # fmt: skip
    # 1% of 3 human texts: no false positive allowed, the thresholds are their largest scores
    assert curves["calibration"] == {"fpr": 0.01, "z": 2.0, "winmax_z": 3.0}
    delete = curves["attacks"]["delete"]
    assert list(delete) == ["0.0", "0.2", "0.5"]
    # z 5, 4, 3: only 5 is above 4; all above every human z (-1, 0, 2) and above 2
    assert delete["0.2"] == {"tpr": 1 / 3, "z_mean": 4.0, "auc": 1.0, "tpr_calibrated": 1.0,
                             "auc_winmax": 1.0, "tpr_calibrated_winmax": 1.0}  # fmt: skip
    # z 1 against human -1, 0, 2: 2 of 3 pairs; WinMax 3 against 0, 1, 3: 2.5 of 3 (a tie)
    assert delete["0.5"] == pytest.approx({
        "tpr": 0.0, "z_mean": 1.0, "auc": 2 / 3, "tpr_calibrated": 0.0,
        "auc_winmax": 2.5 / 3, "tpr_calibrated_winmax": 0.0})  # fmt: skip


def test_calibrated_threshold_allows_the_asked_false_positives():
    human = np.arange(100, dtype=float)  # 0 .. 99
    assert calibrated_threshold(human, 0.01) == 98.0  # one above it: 1%
    assert calibrated_threshold(human, 0.1) == 89.0  # ten above it
    assert calibrated_threshold(human[:10], 0.01) == 9.0  # none allowed: the largest
    assert calibrated_threshold(np.array([]), 0.01) == math.inf


def test_attack_records_are_nested_in_epsilon_and_copy_paste_is_in_place():
    gens = generations(n=3, length=40)
    records = attack_records(gens, {"substitute": [0.1, 0.3, 0.6], "copy_paste_3": [0.1]},
                             TOKENIZER, seed=1)  # fmt: skip
    for g in gens:
        marked = g["marked"].split()
        edited = [{i for i, (a, b) in enumerate(zip(r["text"].split(), marked, strict=True))
                   if a != b} for r in records if r["id"] == g["id"]
                  and r["attack"] == "substitute"]  # fmt: skip
        assert edited[0] <= edited[1] <= edited[2] and len(edited[2]) <= 24
        pasted = next(
            r["text"] for r in records if r["id"] == g["id"] and r["attack"] == "copy_paste_3"
        ).split()
        human = g["human"].split()
        # 3 spans of int(0.1 * 40) = 4 tokens: at most 12 differ from the human text, each
        # the watermarked text's word at that place
        from_marked = [i for i, w in enumerate(pasted) if w != human[i]]
        assert all(pasted[i] == marked[i] for i in from_marked) and len(from_marked) <= 12
        assert sum(pasted[i] == marked[i] != human[i] for i in range(40)) >= 6
    with pytest.raises(ValueError, match="unknown attack 'paraphrase'"):
        attack_records(gens, {"paraphrase": [0.1]}, TOKENIZER, seed=1)


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
