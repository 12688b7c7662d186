"""The FLIP track's real Snakemake DAG end to end on the demo, in a copy of the repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import copy_repo, snakemake_in
from workflow.flip.layout import list_shards


def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return snakemake_in(workdir, "tests/flip/e2e.yaml", *args, check=check)


@pytest.mark.slow
def test_flip_dag_end_to_end(tmp_path):
    workdir = copy_repo(tmp_path, "tests/flip/e2e.yaml")
    smk(workdir, "--cores", "2")
    demo = json.loads((workdir / "data/demo/flip/demo/manifest.json").read_text())
    results = workdir / "results/flip/demo"

    counts = json.loads((results / "filtered/group0/counts.json").read_text())
    planted = {reason: len(keys) for reason, keys in demo["planted"].items()}
    assert {k: v for k, v in counts["dropped"].items() if v} == planted  # exactly the planted
    assert counts["kept"] == demo["good"] and len(list_shards(results / "filtered/group0")) >= 2
    duplicates = pd.read_parquet(results / "dedup/duplicates.parquet")
    assert sorted(duplicates.key) == sorted(demo["planted"]["duplicate"])

    runs = results.glob("*/seed0/metrics.json")
    records = {p.parent.parent.name: json.loads(p.read_text()) for p in runs}
    ratios = {"flip_mask0": 0.0, "flip_mask50": 0.5, "flip_mask75": 0.75}
    assert set(records) == set(ratios)
    for name, record in records.items():
        assert record["extra"]["mask_ratio"] == ratios[name]
        assert record["extra"]["images_per_s"] > 0 and record["extra"]["val_images"] == 16 * 20
        assert 0 <= record["metrics"]["zeroshot_top1"] <= record["metrics"]["zeroshot_top5"] <= 1
        final = torch.load(results / name / "seed0/final.ckpt", weights_only=False)
        # the tuning phase ran unmasked from the pre-trained weights
        assert final["hyper_parameters"]["settings"]["mask_ratio"] == 0.0
        assert final["run_info"]["init_checkpoint"].endswith(f"{name}/seed0/pretrained.ckpt")
        predictions = pd.read_parquet(results / name / "seed0/predictions.parquet")
        assert len(predictions) == 320 and predictions["label"].nunique() == 16
    summary = pd.read_csv(workdir / "results/report/summary.csv")
    assert set(summary[summary.track == "flip"].metric) >= {"zeroshot_top1", "probe_top1"}
    assert (results / "figures/mask_ratio.png").stat().st_size > 10_000
    assert "Nothing to be done" in smk(workdir, "-n", "--cores", "1").stdout
