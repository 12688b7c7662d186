"""k-fold cross-validation of the sequence track: fixed folds over the pooled splits, seeds as
held-out folds, and a k-fold run trained and evaluated through scripts/sequence.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.sequence.synthetic import encoded_fixture
from workflow.common.config import ConfigError
from workflow.common.experiments import experiment_seeds
from workflow.sequence.data import GeneSplit, fold_indices, gene_sets, split_file
from workflow.sequence.layout import SPLITS

SETTINGS = {
    "model": "perceiver_lsai", "task": "protein", "max_epochs": 2, "batch_size": 32, "lr": 0.003,
    "warmup_steps": 5, "window": [], "dim": 16, "latents": 4, "self_layers": 0, "folds": 3,
}  # fmt: skip


encoded = encoded_fixture((120, 40, 40))


def test_fold_indices_partition_the_genes():
    n, folds = 103, 4
    tests = []
    for fold in range(folds):
        parts = fold_indices(n, folds, fold)
        again = fold_indices(n, folds, fold)
        assert all(np.array_equal(parts[k], again[k]) for k in parts)  # fixed folds
        together = np.concatenate(list(parts.values()))
        assert sorted(together) == list(range(n))  # disjoint and complete
        assert abs(len(parts["val"]) - 0.1 * (n - len(parts["test"]))) <= 1
        tests.append(parts["test"])
    assert sorted(np.concatenate(tests)) == list(range(n))  # each gene tested once
    assert {len(t) for t in tests} <= {n // folds, n // folds + 1}


@pytest.mark.parametrize("folds, fold", [(1, 0), (3, 3), (3, -1), (200, 0)])
def test_fold_indices_refuse_impossible_folds(folds, fold):
    with pytest.raises(ValueError):
        fold_indices(103, folds, fold)


def test_gene_sets_pool_the_splits_per_task(encoded):
    splits = {name: GeneSplit(split_file(encoded, name), "protein", []) for name in SPLITS}
    label_of = {
        gene: label
        for split in splits.values()
        for gene, label in zip(split.gene_names(), split.labels(), strict=True)
    }
    assert len(label_of) == 200 - 3 * 3  # three genes per file lack a protein label
    seen = []
    for fold in range(3):
        sets = gene_sets(encoded, "protein", [], folds=3, fold=fold)
        names = {part: set(s.gene_names()) for part, s in sets.items()}
        assert not names["train"] & names["test"] and not names["val"] & names["test"]
        assert not names["train"] & names["val"]
        test = sets["test"]
        assert np.allclose(test.labels(), [label_of[g] for g in test.gene_names()])
        item = test[0]
        assert float(item["target"]) == pytest.approx(label_of[test.gene_names()[0]])
        seen += test.gene_names()
    assert sorted(seen) == sorted(label_of)


def test_without_folds_the_encoded_splits_are_kept(encoded):
    sets = gene_sets(encoded, "mrna", [])
    assert [len(sets[k]) for k in SPLITS] == [120, 40, 40]


def test_seeds_of_a_k_fold_experiment_are_its_folds():
    track = {
        "train": {"folds": None},
        "experiments": {
            "plain": {},
            "cv": {"folds": 4},
            "two": {"folds": 4, "seeds": [0, 3]},
            "wrong": {"folds": 3, "seeds": [1, 3]},
        },
    }
    assert experiment_seeds(track, "plain", [7]) == [7]
    assert experiment_seeds(track, "cv", [7]) == [0, 1, 2, 3]
    assert experiment_seeds(track, "two", [7]) == [0, 3]
    with pytest.raises(ConfigError, match=r"seeds \[3\] name no fold"):
        experiment_seeds(track, "wrong", [7])


def script(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts/sequence.py"), *args]


def test_k_fold_run_trains_and_evaluates_its_held_out_fold(encoded, tmp_path):
    final = tmp_path / "final.ckpt"
    train = script(
        "train", "--settings", json.dumps(SETTINGS), "--encoded", str(encoded),
        "--run-dir", str(tmp_path / "run"), "--out", str(final), "--seed", "2",
    )  # fmt: skip
    result = subprocess.run(train, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(fold 2 of 3)" in result.stderr
    predictions = tmp_path / "predictions.parquet"
    evaluate = script(
        "evaluate", "--checkpoint", str(final), "--encoded", str(encoded),
        "--metrics", str(tmp_path / "metrics.json"), "--predictions", str(predictions),
        "--dataset", "toy", "--experiment", "cv", "--seed", "2",
        "--settings", json.dumps(SETTINGS),
    )  # fmt: skip
    result = subprocess.run(evaluate, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    held_out = gene_sets(encoded, "protein", [], folds=3, fold=2)["test"]
    assert sorted(pd.read_parquet(predictions)["gene"]) == sorted(held_out.gene_names())
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["extra"]["test_genes"] == len(held_out)

    train[train.index("--seed") + 1] = "3"
    result = subprocess.run(train, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: --seed: 3 names no fold of a 3-fold experiment")
    assert "Traceback" not in result.stderr
