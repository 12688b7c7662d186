"""The WSI track's real Snakemake DAG end to end on a small demo, in a copy of the repository."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import by_experiment, copy_repo, e2e_runner, run_records


def check_stored_threshold(run: Path, record: dict) -> None:
    """The run's metrics are at the threshold its training stored in final.ckpt (chosen on
    the validation slides), and ACC is the test predictions' accuracy at that cut."""
    info = torch.load(run / "final.ckpt", weights_only=False)["run_info"]
    assert info["threshold_rule"] == record["extra"]["threshold_rule"] == "youden_val"
    assert record["metrics"]["threshold"] == info["threshold"]
    predictions = pd.read_parquet(run / "predictions.parquet")
    called = predictions["prob"] > info["threshold"]
    assert record["metrics"]["ACC"] == pytest.approx((called == predictions["label"]).mean())


def attention_on_lesions(attention: Path, manifest: dict) -> np.ndarray:
    """Per tumour test slide with mimics: the mean attention of the finest-scale tiles whose
    centre lies in the metastasis, and in the mimics (discs from the demo's manifest)."""
    slides = {e["slide_id"]: e for e in manifest["slides"]}
    rows = []
    with h5py.File(attention) as h5:
        for slide_id, group in h5.items():
            entry = slides[slide_id]
            if not entry["tumor_regions"] or not entry["mimic_regions"]:
                continue
            centres = group["coords"][()] + group.attrs["footprint"] / 2
            scores = group["scores"][()]
            means = []
            for discs in (entry["tumor_regions"], entry["mimic_regions"]):
                inside = np.zeros(len(centres), bool)
                for d in discs:
                    inside |= np.hypot(*(centres - [d["x"], d["y"]]).T) <= d["radius"]
                means.append(scores[inside].mean())
            rows.append(means)
    return np.array(rows)


smk = e2e_runner("tests/wsi/e2e.yaml")
SAGE_FILE = "variants/wsi/graphsage.py"


@pytest.mark.slow
def test_wsi_dag_end_to_end(tmp_path):
    workdir = copy_repo(tmp_path, "tests/wsi/e2e.yaml")
    single = smk(workdir, "-n", "--cores", "1", "results/wsi/demo/dasmil/seed0/metrics.json")
    for rule in ("wsi_demo", "wsi_segment", "wsi_tile", "wsi_features", "wsi_graph"):
        assert f"rule {rule}:" in single.stdout
    assert "rule wsi_figures:" not in single.stdout

    smk(workdir, "--cores", "2")
    results = workdir / "results/wsi/demo"
    records = run_records(results)
    for path, record in records.items():
        assert record["track"] == "wsi" and record["extra"]["test_slides"] == 30
        check_stored_threshold(path.parent, record)
        # the demo's lesion XMLs give every run a FROC over the 30 test slides
        assert record["extra"]["lesion_slides"] == 30 and 0 <= record["metrics"]["FROC"] <= 1
    auc = by_experiment(records.values(), "AUC")
    # the demo's ordering (workflow/wsi/demo.py): DAS-MIL sees a lesion's extent, the x20
    # models only how much texture a slide has, the x5 model no texture at all
    dasmil, abmil = np.array(auc["dasmil"]), np.array(auc["abmil"])
    assert len(dasmil) == len(abmil) == 3
    assert dasmil.min() >= 0.9, auc
    spread = max(dasmil.std(), abmil.std())
    assert dasmil.mean() - abmil.mean() > 3 * spread and dasmil.min() > abmil.max(), auc
    assert max(auc["dsmil_x5"]) < abmil.min(), auc
    # the worked plug-in variant (DAS-MIL with GraphSAGE layers): its run records its file, and
    # it reads the lesions as DAS-MIL does, far above the x5 model that cannot see them
    by_name = {r["experiment"]: r for r in records.values()}
    sage = by_name["dasmil_sage"]
    digest = hashlib.sha256((workdir / SAGE_FILE).read_bytes()).hexdigest()
    assert sage["variants"] == {
        "gnn": {"spec": f"{SAGE_FILE}:GraphSAGE", "file": SAGE_FILE, "sha256": digest}
    }
    assert by_name["dasmil"]["variants"] == {}
    assert auc["dasmil_sage"][0] >= 0.8 and auc["dasmil_sage"][0] > max(auc["dsmil_x5"]), auc
    # for that reason: DAS-MIL attends to the metastasis, not to the mimics of the same
    # texture; ABMIL far less so
    manifest = json.loads((workdir / "data/demo/wsi/demo/manifest.json").read_text())
    das = attention_on_lesions(results / "dasmil/seed0/attention.h5", manifest)
    ab = attention_on_lesions(results / "abmil/seed0/attention.h5", manifest)
    assert len(das) >= 5 and (das[:, 0] > das[:, 1]).all(), das
    das_ratio, ab_ratio = (a[:, 0].mean() / a[:, 1].mean() for a in (das, ab))
    assert das_ratio > 10 and das_ratio > 5 * ab_ratio, (das_ratio, ab_ratio)

    tiles = pd.read_csv(results / "prep/tiles/index.tsv", sep="\t")
    assert len(tiles) == 120 and (tiles["n_x20"] > tiles["n_x10"]).all()
    with h5py.File(results / "dasmil/seed0/attention.h5") as h5:
        assert len(h5) == 30 and all(len(g["scores"]) > 0 for g in h5.values())
    heatmaps = sorted((results / "figures/heatmaps").glob("*.png"))
    assert len(heatmaps) == 30 and (results / "figures/roc.png").stat().st_size > 10_000
    summary = pd.read_csv(workdir / "results/report/summary.csv")
    wsi = summary[summary.track == "wsi"]
    assert {"dasmil", "dsmil_x5", "abmil", "dasmil_sage"} <= set(wsi.experiment)
    thresholds = wsi[wsi.metric == "threshold"]
    assert len(thresholds) == 4 and not thresholds["best"].any()  # reported, never ranked
    markdown = (workdir / "results/report/summary.md").read_text()
    assert "| dasmil_sage | 1 |" in markdown and "| dasmil | 3 |" in markdown
    provenance = next(line for line in markdown.splitlines() if line.startswith("- dasmil_sage:"))
    assert provenance.endswith(f"; gnn `{SAGE_FILE}:GraphSAGE` (sha256 {digest[:12]})"), provenance
    assert "Nothing to be done" in smk(workdir, "-n", "--cores", "1").stdout
