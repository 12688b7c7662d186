"""The decision threshold: chosen on the validation slides (Youden's J), published inside
``final.ckpt``, and the one cut that ``wsi evaluate`` scores ACC / F1 at."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import run_script
from tests.wsi.conftest import synthetic_slide_graph
from workflow.common.errors import InputError
from workflow.common.target import RunTarget
from workflow.wsi.evaluate import stored_threshold
from workflow.wsi.graph import save_graph
from workflow.wsi.metrics import slide_metrics, youden_threshold
from workflow.wsi.train import (
    load_module,
    slide_probabilities,
    train_experiment,
    validation_threshold,
)


def test_youden_threshold_hand_computed():
    """Sorted: 0.1 n, 0.35 t, 0.4 n, 0.7 t, 0.8 n, 0.9 t. Cuts (positive above) and J:
    0.225 -> 3/3 + 1/3 - 1 = 1/3; 0.375 -> 2/3 + 1/3 - 1 = 0; 0.55 -> 2/3 + 2/3 - 1 = 1/3;
    0.75 -> 1/3 + 2/3 - 1 = 0; 0.85 -> 1/3 + 3/3 - 1 = 1/3. Three ties: 0.55 is nearest 0.5."""
    labels = [0, 0, 1, 0, 1, 1]
    probs = [0.1, 0.4, 0.35, 0.8, 0.9, 0.7]
    assert youden_threshold(labels, probs) == pytest.approx(0.55)
    # of equally near ties the lower wins: cuts 0.3 and 0.7 both give J = 1/2
    assert youden_threshold([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.8]) == pytest.approx(0.3)


def test_an_uncalibrated_model_is_scored_at_its_own_cut():
    """Probabilities all below 0.5 but perfectly ranked: at 0.5 every slide is called normal
    (ACC 0.5, F1 0); at the validation cut every slide is right."""
    labels, probs = np.array([0, 0, 1, 1]), np.array([0.02, 0.05, 0.08, 0.12])
    cut = youden_threshold(labels, probs)
    assert cut == pytest.approx(0.065)
    at_cut, at_half = slide_metrics(labels, probs, cut), slide_metrics(labels, probs, 0.5)
    assert at_cut == pytest.approx(
        {"ACC": 1.0, "AUC": 1.0, "balanced_ACC": 1.0, "F1": 1.0, "threshold": 0.065}
    )
    assert (at_half["ACC"], at_half["F1"], at_half["balanced_ACC"]) == (0.5, 0.0, 0.5)
    # a slide exactly at the cut is negative for every metric alike
    tie = slide_metrics(np.array([0, 1]), np.array([0.3, 0.3]), 0.3)
    assert (tie["ACC"], tie["balanced_ACC"]) == (0.5, 0.5)


def test_youden_threshold_needs_both_classes_and_two_values():
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="same probability"):
        youden_threshold([0, 1], [0.4, 0.4])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch maxpool run on 8 train / 6 val synthetic two-scale slides, 6 test slides,
    and the graph index that ``wsi evaluate`` reads."""
    root = tmp_path_factory.mktemp("threshold")
    rows = []
    for i in range(20):
        split = "train" if i < 8 else "val" if i < 14 else "test"
        graph = synthetic_slide_graph(i % 2, i, f"s{i:02d}")
        save_graph(graph, root / f"s{i:02d}.pt")
        rows.append({"slide_id": f"s{i:02d}", "graph": str(root / f"s{i:02d}.pt"), "split": split})
    index = root / "index.tsv"
    pd.DataFrame(rows).to_csv(index, sep="\t", index=False)
    files = {s: [r["graph"] for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    settings = {"model": "maxpool", "max_epochs": 2, "lr": 1e-3}
    final = root / "final.ckpt"
    train_experiment(
        settings, files["train"], files["val"], RunTarget(root / "run", final),
        trainer_overrides={"enable_model_summary": False},
    )  # fmt: skip
    return {"root": root, "index": index, "files": files, "final": final, "settings": settings}


def evaluate(trained, checkpoint, check=True):
    out = trained["root"] / checkpoint.stem
    return out, run_script(
        "scripts/wsi.py", "evaluate", "--checkpoint", checkpoint, "--graphs", trained["index"],
        "--metrics", out / "metrics.json", "--predictions", out / "predictions.parquet",
        "--attention", out / "attention.h5", "--dataset", "synthetic", "--experiment", "maxpool",
        "--settings", json.dumps(trained["settings"]), check=check,
    )  # fmt: skip


def test_training_publishes_the_validation_threshold(trained):
    info = torch.load(trained["final"], weights_only=False)["run_info"]
    labels, probs = slide_probabilities(load_module(trained["final"]), trained["files"]["val"])
    assert info["threshold_rule"] == "youden_val"
    assert info["threshold"] == pytest.approx(youden_threshold(labels, probs))
    assert stored_threshold(trained["final"]) == info["threshold"]


def test_a_validation_split_of_one_class_falls_back_to_one_half(trained):
    normal = trained["files"]["val"][::2]  # slides 8, 10, 12: all normal
    chosen = validation_threshold(trained["final"], normal)
    assert chosen["threshold"] == 0.5
    assert chosen["threshold_rule"] == "fallback: need slides of both classes, one probability each"


def with_run_info(trained, name: str, **changes) -> object:
    checkpoint = torch.load(trained["final"], weights_only=False)
    checkpoint["run_info"] = {**checkpoint["run_info"], **changes}
    for key in [k for k, v in changes.items() if v is None]:
        del checkpoint["run_info"][key]
    path = trained["root"] / f"{name}.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("cut", [0.0, 1.0])
def test_evaluation_scores_at_the_stored_threshold(trained, cut):
    """A stored cut of 0 calls every test slide a tumour, 1 none: ACC / F1 follow the stored
    value, not 0.5, and the metrics report it."""
    out, _ = evaluate(trained, with_run_info(trained, f"cut{cut:g}", threshold=cut))
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    predictions = pd.read_parquet(out / "predictions.parquet")
    expected = slide_metrics(predictions["label"].to_numpy(), predictions["prob"].to_numpy(), cut)
    assert metrics == pytest.approx(expected)
    assert metrics["threshold"] == cut
    assert metrics["ACC"] == pytest.approx(predictions["label"].mean() if cut == 0 else 0.5)
    assert metrics["F1"] == (pytest.approx(2 / 3) if cut == 0 else 0.0)


def test_a_checkpoint_without_a_threshold_is_an_input_error(trained):
    bare = with_run_info(trained, "bare", threshold=None)
    with pytest.raises(InputError, match="no decision threshold"):
        stored_threshold(bare)
    out, result = evaluate(trained, bare, check=False)
    assert result.returncode == 2
    assert f"error: {bare}: no decision threshold in run_info" in result.stderr
    assert "Traceback" not in result.stderr and not (out / "metrics.json").exists()
