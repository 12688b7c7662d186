"""The DTU profile (profiles/dtu-lsf) through snakemake-executor-plugin-lsf against a fake LSF
(tests/lsf/fake): the fake behaves as bjobs/bkill/bsub do, a small distance DAG runs job by
job through it (checked from the bsub calls it recorded), and the full-size DAG's dry-run
asks for DTU's queues.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_repo
from tests.lsf.cluster import QUEUES, FakeLsf, options
from tests.test_profiles import job_resources
from workflow.common.resources import class_resources, load_site

PROJECT = "dtu02456-test"
PROFILES = ["--profile", "profiles/dtu-lsf", "--profile", "tests/lsf/profile"]
CONFIGS = ["tests/e2e.yaml", "tests/lsf/lsf.yaml"]
TEST_FILES = ["tests/e2e.yaml", "tests/lsf/lsf.yaml", "tests/lsf/profile/config.yaml"]
TARGET = "results/distance/demo/disnet/seed0/metrics.json"
#: The resource class each rule of the small DAG picks (rules/distance.smk).
RULE_CLASSES = {
    "distance_demo": "CPU_SMALL",
    "distance_index": "CPU_PREP",
    "distance_extract": "CPU_PREP",
    "distance_train": "GPU_1",
    "distance_evaluate": "CPU_SMALL",
}
GPU_1 = "num=1:mode=exclusive_process"


def site() -> dict:
    return load_site([ROOT / "profiles/dtu-lsf/resources.yaml"], environ={"DTU_PROJECT": PROJECT})


def queue_limit(queue: str) -> int:
    """The fake queue's hard walltime limit in minutes (DTU's, see tests/lsf/cluster.py)."""
    hours, minutes = QUEUES[queue][0].split()[-1].split(":")
    return int(hours) * 60 + int(minutes)


@pytest.fixture
def lsf(tmp_path: Path):
    cluster = FakeLsf(tmp_path, pend_seconds=1.0, seconds_per_minute=1.0)
    cluster.write_config()
    yield cluster
    cluster.stop()


def shell(lsf: FakeLsf, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, shell=True, cwd=lsf.root, env=lsf.env, capture_output=True, text=True
    )


def submit(lsf: FakeLsf, args: str) -> str:
    result = shell(lsf, f"bsub {args}")
    assert result.returncode == 0, result.stderr
    return re.fullmatch(r"Job <(\d+)> is submitted to queue <\w+>\.", result.stdout.strip())[1]


def states(lsf: FakeLsf) -> dict[str, tuple[str, str]]:
    """``bjobs`` as the plugin calls it (``-aJ`` pattern), plus the exit code."""
    result = shell(lsf, "bjobs -noheader -o 'jobid stat exit_code' -aJ '*'")
    assert result.returncode == 0, result.stderr
    return {job: (stat, code) for job, stat, code in map(str.split, result.stdout.splitlines())}


def test_fake_lsf_reports_job_states_as_bjobs_does(lsf):
    done = submit(lsf, "-q hpc -W 5 -J ok -o ok.log 'echo hello from $LSB_JOBID'")
    failed = submit(lsf, "-q hpc -W 5 -J bad -o bad.log 'exit 3'")
    timed_out = submit(lsf, "-q hpc -W 1 -J long -o long.log 'sleep 30'")  # 1 min = 1 s here
    killed = submit(lsf, "-q hpc -W 5 -J kill -o kill.log 'sleep 30'")
    assert states(lsf)[killed][0] == "PEND"  # FAKE_LSF_PEND_SECONDS before it starts
    deadline = time.monotonic() + 30
    while states(lsf)[killed][0] != "RUN" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shell(lsf, f"bkill {killed}").stdout.strip() == f"Job <{killed}> is being terminated"
    while any(s in ("PEND", "RUN") for s, _ in states(lsf).values()):
        assert time.monotonic() < deadline, states(lsf)
        time.sleep(0.2)
    assert states(lsf) == {
        done: ("DONE", "0"),
        failed: ("EXIT", "3"),
        timed_out: ("EXIT", "140"),
        killed: ("EXIT", "130"),
    }
    assert (lsf.root / "ok.log").read_text().startswith(f"hello from {done}\n")
    assert "TERM_RUNLIMIT" in (lsf.root / "long.log").read_text()
    assert shell(lsf, f"bkill {done}").returncode == 255  # already finished
    assert shell(lsf, "bjobs").stderr.strip() == "No unfinished job found"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("-q gpuv100 -W 1441 true", "Cannot exceed queue's hard limit(s). Job not submitted."),
        ("-q nosuch true", "nosuch: No such queue. Job not submitted."),
        ("-q hpc -gpu num=1 true", "fake LSF: 1 GPUs asked; the queue's hosts have 0"),
        ("-q hpc -n 32 -R 'span[hosts=1]' true", "fake LSF: 32 slots on one host; hosts have 24"),
        ("-q hpc -Z true", "bsub: illegal option or missing value: -Z"),
    ],
)
def test_fake_bsub_refuses_what_lsf_would_not_run(lsf, args, message):
    result = shell(lsf, f"bsub {args}")
    assert (result.returncode, result.stderr.strip()) == (255, message)
    assert lsf.submissions() == [] and lsf.jobs() == {}


def test_fake_answers_the_plugins_configuration_queries(lsf):
    """What the plugin reads when it starts (badmin, lsclusters, lsb.params)."""
    code = (
        "import json, snakemake_executor_plugin_lsf as p; "
        "print(json.dumps(p.Executor.get_lsf_config()))"
    )
    config = subprocess.run(
        [sys.executable, "-c", code], env=lsf.env, capture_output=True, text=True, check=True
    )
    conf = json.loads(config.stdout)
    assert conf["LSF_CLUSTER"] == "dcc" and conf["DEFAULT_QUEUE"] == "hpc"
    assert conf["LSF_UNIT_FOR_LIMITS"] == "MB" and conf["LSF_MEMFMT"] == "percpu"
    assert Path(conf["LSB_EVENTS"]).is_file()
    assert "My cluster name is dcc" in shell(lsf, "lsid").stdout


# --- a real run of the distance DAG through the plugin ------------------------------------


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory):
    """Snakemake with the DTU profile (and the fake's overlay) builds one evaluated GPU_1 run."""
    workdir = copy_repo(tmp_path_factory.mktemp("repo"), *TEST_FILES)
    cluster = FakeLsf(tmp_path_factory.mktemp("lsf"))
    cluster.write_config()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", TARGET, *PROFILES, "--configfile", *CONFIGS],
            cwd=workdir,
            env={**cluster.env, "DTU_PROJECT": PROJECT},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        yield workdir, cluster
    finally:
        cluster.stop()


def rule_of(argv: list[str]) -> str:
    """The rule of a submission, from the job name the plugin gives it (``bsub -J``)."""
    return re.match(r"Snakemake_rule_(\w+?)(?::|___)", options(argv)["-J"][0]).group(1)


@pytest.mark.slow
def test_every_job_went_through_bsub_and_finished(dag):
    workdir, cluster = dag
    submitted = [(s["jobid"], rule_of(s["argv"])) for s in cluster.submissions()]
    assert sorted(rule for _, rule in submitted) == sorted(
        [*RULE_CLASSES, "distance_extract", "distance_extract"]  # train, val and test stores
    )
    jobs = cluster.jobs()
    assert {jobid: (jobs[jobid]["stat"], jobs[jobid]["exit_code"]) for jobid, _ in submitted} == {
        jobid: ("DONE", 0) for jobid, _ in submitted
    }
    metrics = json.loads((workdir / TARGET).read_text())
    assert metrics["experiment"] == "disnet" and metrics["metrics"]["ALE"] > 0


@pytest.mark.slow
def test_bsub_asks_lsf_for_each_rules_class(dag):
    _, cluster = dag
    for submission in cluster.submissions():
        rule, argv = rule_of(submission["argv"]), submission["argv"]
        wanted = class_resources(RULE_CLASSES[rule], site())
        asked = options(argv)
        where = f"{rule}: bsub {' '.join(argv[:-1])}"
        assert asked["-q"] == [wanted["lsf_queue"]], where
        assert asked["-P"] == [PROJECT], where
        assert asked["-W"] == [str(wanted["runtime"](None, 1))], where
        assert asked["-n"] == [str(wanted["cpus_per_task"])], where
        (mem,) = [float(m) for r in asked["-R"] for m in re.findall(r"rusage\[mem=([\d.]+)\]", r)]
        assert mem * wanted["cpus_per_task"] == wanted["mem_mb"], where  # per core, in MB
        assert "span[hosts=1]" in asked["-R"], where
        assert asked.get("-gpu") == ([GPU_1] if rule == "distance_train" else None), where


@pytest.mark.slow
def test_gpu_training_ran_on_a_v100_queue_and_the_rest_on_hpc(dag):
    _, cluster = dag
    queues = {(rule_of(s["argv"]), options(s["argv"])["-q"][0]) for s in cluster.submissions()}
    assert queues == {
        (rule, "gpuv100" if rule == "distance_train" else "hpc") for rule in RULE_CLASSES
    }
    # the fake gave the training job one GPU and no other job any
    gpus = {j["name"].split(":")[0]: j["gpus"] for j in cluster.jobs().values()}
    assert gpus == {f"Snakemake_rule_{r}": int(r == "distance_train") for r in RULE_CLASSES}


# --- the full-size DAG ---------------------------------------------------------------------


def test_retries_stay_within_each_queues_walltime():
    """A job killed at its walltime reruns with runtime x attempt (retries: 2): every attempt
    must still fit its queue, or bsub refuses the retry."""
    for name in site()["classes"]:
        resources = class_resources(name, site())
        limit = queue_limit(resources["lsf_queue"])
        attempts = [resources["runtime"](None, attempt) for attempt in (1, 2, 3)]
        assert max(attempts) <= limit and attempts[0] < limit, (name, attempts, limit)


def test_full_dry_run_asks_for_dtu_queues(tmp_path: Path):
    workdir = copy_repo(tmp_path)
    env = {**os.environ, "DTU_PROJECT": PROJECT}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-p",
            "--profile",
            "profiles/dtu-lsf",
            "--configfile",
            "config/leonardo.yaml",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [(rule, res) for rule, res in job_resources(result.stdout) if "lsf_queue" in res]
    classes = site()["classes"]
    train = [res for rule, res in jobs if rule == "distance_train"]
    assert len(train) == 6  # disnet, zhu x 3 seeds
    for res in train:
        assert res["lsf_queue"] == "gpuv100" and res["lsf_extra"] == f'-gpu "{GPU_1}"'
        assert res["lsf_project"] == PROJECT and res["runtime"] == str(classes["GPU_1"]["runtime"])
        assert res["cpus_per_task"] == "4" and res["mem_mb"] == str(classes["GPU_1"]["mem_mb"])
    for rule, res in jobs:
        assert res["lsf_project"] == PROJECT, rule
        assert int(res["runtime"]) <= queue_limit(res["lsf_queue"]), rule
        gpus = {"hpc": None, "gpuv100": 1, "gpua100": 2}[res["lsf_queue"]]
        wanted = None if gpus is None else f'-gpu "num={gpus}:mode=exclusive_process"'
        assert res.get("lsf_extra") == wanted, rule
    ddp = [rule for rule, res in jobs if res["lsf_queue"] == "gpua100"]
    assert ddp  # FLIP's DDP runs: one A100 node, both GPUs, one rank each
    assert result.stdout.count("torchrun --standalone --nnodes=1 --nproc-per-node=2 ") == len(ddp)
    assert result.stdout.count("--devices 2 --num-nodes 1 ") == len(ddp)
    assert "srun" not in result.stdout
