"""The WSI track's real Snakemake DAG end to end on a small demo, in a copy of the repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch

from tests.conftest import copy_repo, snakemake_in


def check_stored_threshold(run: Path, record: dict) -> None:
    """The run's metrics are at the threshold its training stored in final.ckpt (chosen on
    the validation slides), and ACC is the test predictions' accuracy at that cut."""
    info = torch.load(run / "final.ckpt", weights_only=False)["run_info"]
    assert info["threshold_rule"] == record["extra"]["threshold_rule"] == "youden_val"
    assert record["metrics"]["threshold"] == info["threshold"]
    predictions = pd.read_parquet(run / "predictions.parquet")
    called = predictions["prob"] > info["threshold"]
    assert record["metrics"]["ACC"] == pytest.approx((called == predictions["label"]).mean())


def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return snakemake_in(workdir, "tests/wsi/e2e.yaml", *args, check=check)


@pytest.mark.slow
def test_wsi_dag_end_to_end(tmp_path):
    workdir = copy_repo(tmp_path, "tests/wsi/e2e.yaml")
    single = smk(workdir, "-n", "--cores", "1", "results/wsi/demo/dasmil/seed0/metrics.json")
    for rule in ("wsi_demo", "wsi_segment", "wsi_tile", "wsi_features", "wsi_graph"):
        assert f"rule {rule}:" in single.stdout
    assert "rule wsi_figures:" not in single.stdout

    smk(workdir, "--cores", "2")
    results = workdir / "results/wsi/demo"
    auc = {}
    for path in sorted(results.glob("*/seed*/metrics.json")):
        record = json.loads(path.read_text())
        auc.setdefault(record["experiment"], []).append(record["metrics"]["AUC"])
        assert record["track"] == "wsi" and record["extra"]["test_slides"] == 10
        check_stored_threshold(path.parent, record)
    assert len(auc["dasmil"]) == 3
    assert min(auc["dasmil"]) >= 0.9, auc  # the finest-scale signal is found
    assert max(auc["dsmil_x5"]) < min(auc["dasmil"]), auc  # and is invisible at x5

    tiles = pd.read_csv(results / "prep/tiles/index.tsv", sep="\t")
    assert len(tiles) == 40 and (tiles["n_x20"] > tiles["n_x10"]).all()
    with h5py.File(results / "dasmil/seed0/attention.h5") as h5:
        assert len(h5) == 10 and all(len(g["scores"]) > 0 for g in h5.values())
    heatmaps = sorted((results / "figures/heatmaps").glob("*.png"))
    assert len(heatmaps) == 10 and (results / "figures/roc.png").stat().st_size > 10_000
    summary = pd.read_csv(workdir / "results/report/summary.csv")
    wsi = summary[summary.track == "wsi"]
    assert {"dasmil", "dsmil_x5", "abmil"} <= set(wsi.experiment)
    thresholds = wsi[wsi.metric == "threshold"]
    assert len(thresholds) == 3 and not thresholds["best"].any()  # reported, never ranked
    assert "Nothing to be done" in smk(workdir, "-n", "--cores", "1").stdout
