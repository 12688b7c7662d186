"""The Leonardo profile against a real SLURM cluster: one node, Leonardo's partition names,
fake GPUs (tests/slurm/cluster.py). Everything is checked from SLURM's own job records.

Run order matters within this module: the DAG runs once, the fault tests extend it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_repo, history
from tests.slurm.cluster import DEFAULT_CONF, Cluster, clear_stale_link, missing_programs
from workflow.common.resources import class_resources, load_site

pytestmark = pytest.mark.slow

PROFILES = ["--profile", "profiles/leonardo", "--profile", "tests/slurm/profile"]
CONFIGS = ["tests/e2e.yaml", "tests/slurm/slurm.yaml"]
TEST_FILES = [
    "tests/e2e.yaml",
    "tests/slurm/slurm.yaml",
    "tests/slurm/faults.yaml",
    "tests/slurm/flip.yaml",
    "tests/slurm/groups.yaml",
    "tests/slurm/profile/config.yaml",
    "tests/slurm/profile/resources.yaml",
]
#: The resource class each rule picks (rules/*.smk); `all` is local.
RULE_CLASSES = {
    "distance_demo": "CPU_SMALL",
    "distance_index": "CPU_PREP",
    "distance_extract": "CPU_PREP",
    "distance_reference": "CPU_SMALL",
    "distance_train": "GPU_1",
    "distance_train_ddp": "GPU_NODE_DDP",
    "distance_evaluate": "CPU_SMALL",
    "distance_figures": "CPU_SMALL",
    "report": "CPU_SMALL",
}


def _skip_reason() -> str | None:
    if missing := missing_programs():
        return f"needs {', '.join(missing)}: apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    clear_stale_link()
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        return f"{DEFAULT_CONF} exists: will not start a test cluster on a configured machine"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    if reason := _skip_reason():
        pytest.skip(reason)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"), *TEST_FILES)


def snakemake(*args: str, configs: list[str] = CONFIGS) -> list[str]:
    """The Leonardo command line plus the test-cluster overlay (targets before --configfile)."""
    return [sys.executable, "-m", "snakemake", *args, *PROFILES, "--configfile", *configs]


def run(cluster: Cluster, workdir: Path, *args: str, configs: list[str] = CONFIGS) -> str:
    result = subprocess.run(
        snakemake(*args, configs=configs),
        cwd=workdir,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout + result.stderr


def jobs(cluster: Cluster) -> list[dict[str, str]]:
    """Every job slurmctld knows (MinJobAge keeps finished ones), with its rule."""
    out = cluster.run("scontrol", "show", "job", "-o")
    records = []
    for line in out.splitlines():
        if not line.startswith("JobId="):
            continue
        items = (item.split("=", 1) for item in re.split(r" +(?=[A-Za-z_/:]+=)", line.strip()))
        record = {key: value.strip() for key, value in items}
        comment = record.get("Comment", "")
        match = re.match(r"rule_(\w+?)(?:_wildcards_(.*))?$", comment)
        record["rule"] = match.group(1) if match else ""
        record["wildcards"] = (match.group(2) or "") if match else ""
        records.append(record)
    return sorted(records, key=lambda r: int(r["JobId"]))


def minutes(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def megabytes(memory: str) -> int:
    """SLURM's memory field (62.50G, 7000M) in MB."""
    scale = {"M": 1, "G": 1024, "T": 1024**2}[memory[-1]]
    return round(float(memory[:-1]) * scale)


def site() -> dict:
    return load_site(
        [ROOT / "profiles/leonardo/resources.yaml", ROOT / "tests/slurm/profile/resources.yaml"],
        environ={},
    )


def gpus_of(record: dict[str, str]) -> int:
    tres = record.get("TresPerNode", "") + record.get("TresPerJob", "")
    match = re.search(r"gpu:(\d+)", tres)
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="module")
def dag(cluster: Cluster, workdir: Path) -> list[dict[str, str]]:
    run(cluster, workdir)
    return jobs(cluster)


def test_every_job_went_through_sbatch_with_its_class(dag):
    assert {r["rule"] for r in dag} == set(RULE_CLASSES)
    for record in dag:
        wanted = class_resources(RULE_CLASSES[record["rule"]], site())
        where = f"{record['rule']} {record['wildcards']} (job {record['JobId']})"
        assert record["JobState"] == "COMPLETED", where
        assert record["Partition"] == wanted["slurm_partition"], where
        assert int(record["CPUs/Task"]) == wanted["cpus_per_task"], where
        assert megabytes(record["MinMemoryNode"]) == wanted["mem_mb"], where
        assert minutes(record["TimeLimit"]) == wanted["runtime"](None, 1), where
        gres = wanted.get("gres", "")
        assert gpus_of(record) == wanted.get("gpu", 0) + int(gres.split(":")[-1] or 0), where
        tasks = wanted.get("tasks_per_node", 1) * wanted.get("nodes", 1)
        assert int(record["NumTasks"]) == tasks, where


def test_gpu_classes_ask_for_gpus_on_the_booster_partition(dag):
    train = [r for r in dag if r["rule"] in ("distance_train", "distance_train_ddp")]
    assert len(train) == 3  # disnet, zhu, disnet_ddp
    assert all(r["Partition"] == "boost_usr_prod" and gpus_of(r) >= 1 for r in train)
    cpu = [r for r in dag if r["rule"] not in ("distance_train", "distance_train_ddp")]
    assert all(gpus_of(r) == 0 for r in cpu)


def test_ddp_job_runs_two_ranks_in_one_lightning_run(dag, workdir):
    (ddp,) = [r for r in dag if r["rule"] == "distance_train_ddp"]
    assert int(ddp["NumTasks"]) == 2 and ddp["NumNodes"] == "1"
    log = (workdir / "logs/distance_train/demo_disnet_ddp_seed0.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    metrics = json.loads(
        (workdir / "results/distance/demo/disnet_ddp/seed0/metrics.json").read_text()
    )
    assert metrics["world_size"] == 2
    single = json.loads((workdir / "results/distance/demo/disnet/seed0/metrics.json").read_text())
    assert single["world_size"] == 1


def wait_for(ready, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def running_job(cluster: Cluster, comment: str) -> str | None:
    out = cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i %k")
    ids = [line.split()[0] for line in out.splitlines() if line.split()[1:] == [comment]]
    return ids[0] if ids else None


FAULTS = [*CONFIGS, "tests/slurm/faults.yaml"]
FAULT_RUNS = yaml.safe_load((ROOT / FAULTS[-1]).read_text())["distance"]["experiments"]
EPOCHS = FAULT_RUNS["disnet_long"]["max_epochs"]  # what the resumed attempt trains up to


def test_scancel_is_retried_and_resumes_from_the_last_checkpoint(dag, cluster, workdir):
    run_dir = workdir / "results/distance/demo/disnet_long/seed0/run"
    target = "results/distance/demo/disnet_long/seed0/final.ckpt"
    comment = "rule_distance_train_wildcards_demo_disnet_long_0"
    controller = subprocess.Popen(
        snakemake(target, configs=FAULTS),
        cwd=workdir,
        env=cluster.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: len(history(run_dir)) >= 5 or controller.poll() is not None,
            "five epochs of disnet_long",
        )
        job = running_job(cluster, comment)
        assert job and controller.poll() is None, "training ended before it could be cancelled"
        cluster.run("scancel", job)
        _, stderr = controller.communicate(timeout=1200)
    finally:
        if controller.poll() is None:
            controller.kill()
    assert controller.returncode == 0, stderr[-5000:]
    attempts = [r for r in jobs(cluster) if r["Comment"] == comment]
    assert [r["JobState"] for r in attempts] == ["CANCELLED", "COMPLETED"]
    # the retry asked for twice the time (runtime x attempt) ...
    assert minutes(attempts[1]["TimeLimit"]) == 2 * minutes(attempts[0]["TimeLimit"])
    # ... and went on from the last checkpoint: no epoch trained twice
    runs = history(run_dir)
    first = [h["epoch"] for h in runs if h["pid"] == runs[0]["pid"]]
    second = [h["epoch"] for h in runs if h["pid"] != runs[0]["pid"]]
    assert len(first) >= 5 and second, "both attempts trained"
    # +2: the cancel may land between saving last.ckpt and logging that epoch
    assert max(first) < min(second) <= max(first) + 2
    assert second == list(range(min(second), EPOCHS))
    log = (workdir / "logs/distance_train/demo_disnet_long_seed0.log").read_text()
    assert "resuming from" in log
    assert (workdir / target).exists()


def test_killed_controller_rerun_finishes_without_redoing_jobs(dag, cluster, workdir):
    run_dir = workdir / "results/distance/demo/disnet_kill/seed0/run"
    comment = "rule_distance_train_wildcards_demo_disnet_kill_0"
    before = {r["JobId"] for r in jobs(cluster)}
    controller = subprocess.Popen(
        snakemake(configs=FAULTS),
        cwd=workdir,
        env=cluster.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: len(history(run_dir)) >= 3 or controller.poll() is not None,
            "three epochs of disnet_kill",
        )
        assert controller.poll() is None and running_job(cluster, comment)
    finally:
        controller.send_signal(signal.SIGKILL)  # as if the login-node session died
        controller.wait()
    done = {
        (r["rule"], r["wildcards"])
        for r in jobs(cluster)
        if r["JobId"] not in before and r["JobState"] == "COMPLETED"
    }
    # its jobs live on; let them end before rerunning the same command
    wait_for(lambda: not cluster.run("squeue", "-h").strip(), "orphaned jobs to end")
    seen = {r["JobId"] for r in jobs(cluster)}
    run(cluster, workdir, "--unlock", configs=FAULTS)  # the killed controller's stale lock
    run(cluster, workdir, configs=FAULTS)
    redone = [
        (r["rule"], r["wildcards"])
        for r in jobs(cluster)
        if r["JobId"] not in seen and (r["rule"], r["wildcards"]) in done
    ]
    assert not redone, f"rerun repeated finished jobs: {redone}"
    assert (workdir / "results/report/summary.csv").exists()
    assert "disnet_kill" in (workdir / "results/report/summary.csv").read_text()
    assert "Nothing to be done" in run(cluster, workdir, "-n", configs=FAULTS)


def test_cluster_run_without_a_resource_map_stops_before_submitting(dag, cluster, workdir):
    submitted = len(jobs(cluster))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--executor",
            "slurm",
            "--jobs",
            "1",
            "--slurm-no-account",
            "--forceall",
            "--configfile",
            *CONFIGS,
        ],
        cwd=workdir,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "error: --executor sends jobs to a cluster but no resource map is loaded" in (
        result.stderr
    )
    assert len(jobs(cluster)) == submitted


def test_flip_pretraining_runs_two_ranks_with_gathered_features(dag, cluster, workdir):
    seen = {r["JobId"] for r in jobs(cluster)}
    target = "results/flip/demo/flip_ddp/seed0/metrics.json"
    run(cluster, workdir, target, configs=[*CONFIGS, "tests/slurm/flip.yaml"])
    new = {r["rule"]: r for r in jobs(cluster) if r["JobId"] not in seen}
    assert set(new) == {"flip_demo", "flip_hash", "flip_dedup", "flip_filter",
                        "flip_pretrain_ddp", "flip_tune_ddp", "flip_evaluate"}  # fmt: skip
    for rule in ("flip_pretrain_ddp", "flip_tune_ddp"):
        record = new[rule]
        assert record["JobState"] == "COMPLETED" and int(record["NumTasks"]) == 2
        assert record["Partition"] == "boost_usr_prod" and gpus_of(record) == 2
    log = (workdir / "logs/flip_pretrain/demo_flip_ddp_seed0.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    metrics = json.loads((workdir / target).read_text())
    assert metrics["world_size"] == 2 and metrics["extra"]["images_per_s"] > 0


def test_short_gpu_runs_share_one_allocation_one_after_another(dag, cluster, workdir):
    """Leonardo's group jobs, as its profile forms them (a local `gpu` limit of 1): the
    group asks SLURM for one GPU and for its runs' minutes summed."""
    seen = {r["JobId"] for r in jobs(cluster)}
    targets = [f"results/distance/demo/{e}/seed0/final.ckpt" for e in ("disnet_a", "disnet_b")]
    grouping = ["--groups", "distance_train=runs", "--group-components", "runs=2"]
    minutes_each = 4
    runtime = ["--set-resources", f"distance_train:runtime={minutes_each}"]
    run(
        cluster,
        workdir,
        *targets,
        *grouping,
        *runtime,
        configs=[*CONFIGS, "tests/slurm/flip.yaml", "tests/slurm/groups.yaml"],  # flip: as before
    )
    new = [r for r in jobs(cluster) if r["JobId"] not in seen]
    assert len(new) == 1, [r["Comment"] for r in new]  # both runs, one sbatch job
    (group,) = new
    assert group["JobState"] == "COMPLETED" and group["Partition"] == "boost_usr_prod"
    assert gpus_of(group) == 1 and int(group["NumTasks"]) == 1
    assert minutes(group["TimeLimit"]) == 2 * minutes_each  # consecutive, not side by side
    for target in targets:
        assert (workdir / target).is_file()
