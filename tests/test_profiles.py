"""What each profile asks the scheduler for, read from Snakemake's own dry-run."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def dry_run(*args: str, account: str = "IscrB_TEST") -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) for every job of a dry-run."""
    env = {**os.environ, "LEONARDO_ACCOUNT": account}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs, rule = [], None
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif (match := re.match(r"^\s+resources: (.*)", line)) and rule:
            jobs.append((rule, dict(kv.split("=", 1) for kv in match.group(1).split(", "))))
            rule = None
    return jobs


@pytest.fixture(scope="module")
def leonardo() -> list[tuple[str, dict[str, str]]]:
    return dry_run("--profile", "profiles/leonardo", "--configfile", "config/leonardo.yaml")


def test_leonardo_gpu_rules_ask_for_one_gpu_and_their_memory(leonardo):
    train = [res for rule, res in leonardo if rule == "distance_train"]
    assert len(train) == 8  # mean, pinhole x 1 seed; disnet, zhu x 3 seeds
    for res in train:
        assert res["slurm_partition"] == "boost_usr_prod" and res["qos"] == "normal"
        assert res["gpu"] == "1" and res["tasks_per_gpu"] == "0"
        assert int(res["mem_mb"]) > 8000 and int(res["cpus_per_task"]) >= 1
        assert res["slurm_account"] == "IscrB_TEST" and int(res["runtime"]) > 0


def test_leonardo_preparation_runs_on_cpu_partitions(leonardo):
    prep = [res for rule, res in leonardo if rule in ("distance_index", "distance_extract")]
    assert len(prep) == 4
    for res in prep:
        assert res["slurm_partition"] == "dcgp_usr_prod" and "gpu" not in res
    others = {
        res["slurm_partition"]
        for rule, res in leonardo
        if rule in ("distance_evaluate", "distance_figures", "report")
    }
    assert others == {"lrd_all_serial"}


def test_local_runs_train_on_cpu():
    train = [res for rule, res in dry_run("--cores", "2") if rule == "distance_train"]
    assert train and all(res["gpu"] == "0" for res in train)
