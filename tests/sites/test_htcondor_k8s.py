"""The INFN Cloud sites (profiles/infn-htcondor, profiles/infn-k8s): what each asks its
scheduler for, read from Snakemake's dry-run and from the submit descriptions and pod specs
the real executor plugins send, recorded by tests/sites/capture.py with only the cluster's
API faked (the HTCondor run executes its jobs here, as on a shared filesystem).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_repo, finish_dag
from tests.test_profiles import job_resources

HTCONDOR = "profiles/infn-htcondor"
K8S = "profiles/infn-k8s"
CAPTURE = ROOT / "tests/sites/capture.py"
CONFIGS = ["tests/e2e.yaml", "tests/sites/small.yaml"]
TEST_FILES = ["tests/e2e.yaml", "tests/sites/small.yaml"]
TARGET = "results/distance/demo/disnet/seed0/metrics.json"
#: Rules whose jobs train or infer on one GPU (class GPU_1) in the demo or Leonardo DAG.
GPU_RULES = {
    "distance_train",
    "flip_evaluate",
    "flip_pretrain",
    "flip_tune",
    "nerf_train",
    "nerf_train_nerfstudio",
    "sequence_train",
    "watermark_evaluate",
    "watermark_generate",
    "watermark_lm",
    "watermark_paraphrase",
    "wsi_features",
    "wsi_train",
}
#: The resource class and the threads (rules/distance.smk) of each rule of the small DAG.
RULES = {
    "distance_demo": ("CPU_SMALL", 1),
    "distance_index": ("CPU_PREP", 1),
    "distance_extract": ("CPU_PREP", 1),
    "distance_train": ("GPU_1", 4),
    "distance_evaluate": ("CPU_SMALL", 1),
}


def classes(profile: str) -> dict[str, dict]:
    return yaml.safe_load((ROOT / profile / "resources.yaml").read_text())["classes"]


def profile_settings(profile: str) -> dict:
    return yaml.safe_load((ROOT / profile / "config.yaml").read_text())


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True
    )


def capture(cwd: Path, backend: str, record: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake through the real plugin against tests/sites/capture.py's fake cluster."""
    command = [sys.executable, str(CAPTURE), backend, str(record), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def megabytes(value: str) -> int:
    """An HTCondor size (``32000MB``, ``4GB``) in MB."""
    number, unit = re.fullmatch(r"(\d+)(MB|GB)", value).groups()
    return int(number) * (1024 if unit == "GB" else 1)


# --- dry-runs of the whole DAG ---------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.mark.slow
@pytest.mark.parametrize("config", [[], ["--configfile", "config/leonardo.yaml"]])
@pytest.mark.parametrize(("profile", "gpu_key"), [(HTCONDOR, "request_gpus"), (K8S, "gpu")])
def test_dry_run_asks_for_gpus_only_for_gpu_jobs(workdir, profile, gpu_key, config):
    result = snakemake(workdir, "-n", "-p", "--profile", profile, *config)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [(rule, res) for rule, res in job_resources(result.stdout) if rule != "all"]
    site = classes(profile)
    gpu_jobs = [(rule, res) for rule, res in jobs if gpu_key in res]
    for rule, res in jobs:
        if rule in GPU_RULES:
            assert res[gpu_key] == "1", (rule, res)
            assert res["mem_mb"] == str(site["GPU_1"]["mem_mb"]), (rule, res)
        elif rule.endswith("_ddp"):  # Leonardo's FLIP pre-training: one node's GPUs
            assert res[gpu_key] == str(site["GPU_NODE_DDP"]["gpus"]), (rule, res)
        else:
            assert gpu_key not in res and "gpu_manufacturer" not in res, (rule, res)
    if profile == K8S:
        assert all(res["gpu_manufacturer"] == "nvidia" for _, res in gpu_jobs)
        assert all(res["scale"] == "0" for _, res in jobs)  # limits, as nvidia.com/gpu needs
    else:
        assert all(res["htcondor_request_mem_mb"] == res["mem_mb"] for _, res in jobs)
        assert all(res["job_wrapper"] == f"{HTCONDOR}/job.sh" for _, res in jobs)
        assert not any("accounting_group" in key for _, res in jobs for key in res)
    assert len([r for r, _ in gpu_jobs if r == "distance_train"]) == (6 if config else 4)
    ddp = [rule for rule, _ in gpu_jobs if rule.endswith("_ddp")]
    if config:  # one host: torchrun starts one rank per GPU
        assert sorted(set(ddp)) == ["flip_pretrain_ddp", "flip_tune_ddp"]
        ranks = site["GPU_NODE_DDP"]["tasks_per_node"]
        assert f"torchrun --standalone --nnodes=1 --nproc-per-node={ranks} python" in result.stdout
        assert "srun" not in result.stdout
    else:
        assert not ddp


# --- HTCondor: the small distance DAG through the plugin and a fake pool -------------------


@pytest.fixture(scope="module")
def condor_run(tmp_path_factory: pytest.TempPathFactory):
    """The distance DAG's 7 jobs submitted by the plugin and run here by the fake schedd."""
    workdir = copy_repo(tmp_path_factory.mktemp("condor"), *TEST_FILES)
    record = workdir / "submitted.jsonl"
    result = capture(
        workdir,
        "htcondor",
        record,
        "--run",
        "--",
        TARGET,
        "--profile",
        HTCONDOR,
        "--configfile",
        *CONFIGS,
        "--seconds-between-status-checks",
        "1",
        "--max-status-checks-per-second",
        "10",
        "--retries",
        "0",
        "--latency-wait",
        "5",
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return workdir, [entry["submit"] for entry in records(record)]


@pytest.mark.slow
def test_every_job_ran_through_the_pool(condor_run):
    workdir, submitted = condor_run
    rules = sorted(s["batch_name"].rsplit("-", 1)[0] for s in submitted)
    assert rules == sorted([*RULES, "distance_extract", "distance_extract"])  # 3 stores
    metrics = json.loads((workdir / TARGET).read_text())
    assert metrics["experiment"] == "disnet" and metrics["metrics"]["ALE"] > 0
    events = (workdir / "logs/htcondor/snakemake-rules.log").read_text()
    assert events.count("(return value 0)") == len(submitted)


@pytest.mark.slow
def test_submit_descriptions_ask_for_each_rules_class(condor_run):
    _, submitted = condor_run
    site = classes(HTCONDOR)
    for submit in submitted:
        rule = submit["batch_name"].rsplit("-", 1)[0]
        name, threads = RULES[rule]
        wanted = site[name]
        assert submit.get("request_gpus") == ("1" if name == "GPU_1" else None), submit
        assert megabytes(submit["request_memory"]) == wanted["mem_mb"], submit
        assert int(submit["request_disk"]) == wanted["disk_mb"] * 1024, submit  # in KB
        assert submit["request_cpus"] == str(threads), submit  # the plugin's: the threads
        assert "accounting_group" not in submit and "universe" not in submit, submit
        assert submit["getenv"] == "False", submit
        # the wrapper runs the job's own Snakemake command
        assert submit["executable"] == f"{HTCONDOR}/job.sh", submit
        assert re.search(rf"\S+ -m snakemake .*--target-jobs {rule}:", submit["arguments"])
        assert f"--allowed-rules {rule} " in submit["arguments"], submit
        assert submit["log"] == "logs/htcondor/snakemake-rules.log", submit
        assert submit["output"].startswith(f"logs/htcondor/{rule}/"), submit


@pytest.mark.slow
def test_gpu_training_asked_for_one_gpu_and_cpu_jobs_for_none(condor_run):
    _, submitted = condor_run
    gpus = {s["batch_name"].rsplit("-", 1)[0]: s.get("request_gpus") for s in submitted}
    assert gpus == {rule: "1" if rule in GPU_RULES else None for rule in RULES}


# --- Kubernetes: pod specs of one GPU job and one CPU job ------------------------------------


@pytest.fixture(scope="module")
def k8s_run(tmp_path_factory: pytest.TempPathFactory):
    """The small DAG done, its outputs on the "PVC" (a folder here), two of them removed:
    Snakemake submits exactly their two jobs, a GPU training run and a CPU evaluation, and
    the fake cluster reports both failed once the plugin created them."""
    if shutil.which("rsync") is None:
        pytest.skip("the fs storage plugin of profiles/infn-k8s needs rsync")
    root = tmp_path_factory.mktemp("k8s")
    (root / "repo").mkdir()
    workdir = copy_repo(root / "repo", *TEST_FILES)
    finish_dag(workdir, "--configfile", *CONFIGS)
    volume = root / "pvc"
    prefix = volume / "lsai-tracks"
    prefix.mkdir(parents=True)
    for name in ("data", "results", "logs", "benchmarks"):
        if (workdir / name).exists():
            shutil.move(workdir / name, prefix / name)
    train = "results/distance/demo/disnet/seed0/final.ckpt"
    evaluate = "results/distance/demo/zhu/seed0/metrics.json"
    (prefix / train).unlink()
    (prefix / evaluate).unlink()
    record = workdir / "submitted.jsonl"
    result = capture(
        workdir,
        "kubernetes",
        record,
        "--",
        train,
        evaluate,
        "--profile",
        K8S,
        "--configfile",
        *CONFIGS,
        "--default-storage-prefix",
        str(prefix),
        "--kubernetes-persistent-volumes",
        f"lsai-shared:{volume}",
        "--seconds-between-status-checks",
        "1",
        "--retries",
        "0",
        "--latency-wait",
        "1",
    )
    entries = records(record) if record.exists() else []
    jobs = [e for e in entries if "job" in e]
    assert len(jobs) == 2, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert result.returncode != 0  # the fake reports every job failed
    return volume, prefix, entries


def pod(job: dict) -> tuple[dict, dict]:
    spec = job["job"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def rule_of(container: dict) -> str:
    return re.search(r"--target-jobs '?(\w+):", container["args"][1]).group(1)


def test_profile_mounts_the_volume_that_holds_the_storage_prefix():
    settings = profile_settings(K8S)
    (volume,) = settings["kubernetes-persistent-volumes"]
    claim, mount = volume.split(":")
    assert claim and Path(settings["default-storage-prefix"]).is_relative_to(mount)
    assert settings["default-storage-provider"] == "fs"


@pytest.mark.slow
def test_pod_specs_ask_for_the_classes_resources(k8s_run):
    volume, prefix, entries = k8s_run
    settings = profile_settings(K8S)
    site = classes(K8S)
    jobs = {rule_of(pod(e)[1]): e for e in entries if "job" in e}
    assert sorted(jobs) == ["distance_evaluate", "distance_train"]
    for rule, job in jobs.items():
        name, threads = RULES[rule]
        wanted = site[name]
        spec, container = pod(job)
        assert job["namespace"] == settings["kubernetes-namespace"]
        assert container["image"] == settings["container-image"]
        resources = container["resources"]
        gpu = {"nvidia.com/gpu": "1"} if name == "GPU_1" else {}
        sizes = {"memory": f"{wanted['mem_mb']}M", "ephemeral-storage": f"{wanted['disk_mb']}M"}
        assert resources["limits"] == {**sizes, "cpu": f"{threads * 1000}m", **gpu}, rule
        assert resources["requests"] == {**sizes, "cpu": f"{int(threads * 950)}m", **gpu}, rule
        taint = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}
        tolerations = [{**taint, "effect": "NoSchedule"}] if gpu else None
        assert spec.get("tolerations") == tolerations, rule
        assert spec["nodeSelector"] == {} and spec["restartPolicy"] == "Never"
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                  if "persistentVolumeClaim" in v}  # fmt: skip
        assert claims == {"lsai-shared": "lsai-shared"}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"workdir": "/workdir", "lsai-shared": str(volume)}
        # the pod fetches the sources from the storage, then runs the job's Snakemake command
        command = container["args"][1]
        assert container["command"] == ["/bin/sh"] and container["args"][0] == "-c"
        assert re.search(r"python -m snakemake --deploy-sources \S+ \w+ ", command), command
        assert f"--allowed-rules {rule} " in command
        assert f"--default-storage-prefix '{prefix}'" in command
        assert "--default-storage-provider 'fs'" in command
