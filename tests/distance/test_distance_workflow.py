"""The distance track's real Snakemake DAG end to end on the small test config (tests/e2e.yaml,
shared with the cluster tests), in a copy of the repository."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import by_experiment, copy_repo, e2e_runner, run_records

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


smk = e2e_runner("tests/e2e.yaml")


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from Snakemake's 'Job stats' table."""
    lines = dry_run_output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"), "tests/e2e.yaml")


@pytest.mark.slow
def test_targets_run_only_what_they_need(workdir):
    single = job_counts(
        smk(workdir, "-n", "--cores", "1", "results/distance/demo/zhu/seed0/metrics.json").stdout
    )
    assert single == {
        "distance_demo": 1,
        "distance_index": 1,
        "distance_extract": 3,
        "distance_train": 1,
        "distance_evaluate": 1,
    }
    until = job_counts(smk(workdir, "-n", "--cores", "1", "--until", "distance_extract").stdout)
    assert until == {"distance_demo": 1, "distance_index": 1, "distance_extract": 3}
    everything = job_counts(smk(workdir, "-n", "--cores", "1").stdout)
    # networks: 2x disnet, zhu; references: mean, pinhole
    assert everything["distance_train"] == 3 and everything["distance_reference"] == 2
    assert everything["report"] == 1


@pytest.mark.slow
def test_demo_dag_end_to_end(workdir):
    smk(workdir, "--cores", "2")
    results = workdir / "results"
    records = run_records(results / "distance/demo")
    for path, record in records.items():
        assert record["git_commit"] and record["packages"]["torch"]
        # the demo's planted effects fill every distance and occlusion (ALOE) bin
        bins = {k: v for k, v in record["metrics"].items() if k.startswith(("ALE_", "ALOE_"))}
        assert len(bins) == 8 and None not in bins.values(), (path, bins)
    ale = by_experiment(records.values(), "ALE")
    assert set(ale) == {"mean", "pinhole", "disnet", "zhu"} and len(ale["disnet"]) == 2
    mean_ale, pinhole = ale["mean"][0], ale["pinhole"][0]
    # mean >> pinhole > DisNet, Zhu & Fang: the box is often not a whole adult (demo.py), so
    # the learnt models beat f * 1.75 m / h by more than 3 DisNet seed sds and by 10 %
    disnet, disnet_sd = float(np.mean(ale["disnet"])), float(np.std(ale["disnet"], ddof=1))
    for model in (disnet, ale["zhu"][0]):
        assert model < pinhole - 3 * disnet_sd and model < 0.9 * pinhole, ale
    assert pinhole < 0.5 * mean_ale, ale

    summary = pd.read_csv(results / "report" / "summary.csv")
    disnet = summary[(summary.experiment == "disnet") & (summary.metric == "ALE")].iloc[0]
    assert disnet["seeds"] == 2 and disnet["sd"] >= 0
    assert "## distance / demo" in (results / "report" / "summary.md").read_text()
    assert (results / "distance/demo/figures/error_vs_distance.png").stat().st_size > 10_000
    for log in ("distance_demo/demo.log", "distance_train/demo_disnet_seed0.log"):
        assert (workdir / "logs" / log).stat().st_size > 0

    # a finished workflow has nothing left to do
    assert "Nothing to be done" in smk(workdir, "-n", "--cores", "1").stdout

    report = workdir / "report.html"
    smk(workdir, "--report", str(report))
    assert report.stat().st_size > 10_000


def test_bad_config_stops_naming_the_key(workdir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distance:\n  experiments:\n    zhu: {lr: fast}\n")
    result = smk(workdir, "-n", "--cores", "1", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "distance.experiments.zhu.lr: 'fast' is not of type 'number'" in result.stderr
    assert "Traceback" not in result.stderr
