"""The site layer: one generic class description, each scheduler's own resources and launch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from workflow.common.config import ConfigError
from workflow.common.resources import CLASSES, class_resources, launch_of, load_site

GPU_1 = {"gpus": 1, "cpus_per_task": 8, "mem_mb": 64000, "runtime": 240, "max_runtime": 1440}
NODE = {**GPU_1, "gpus": 4, "nodes": 1, "tasks_per_node": 4, "mem_mb": 200000}
CPU = {"cpus_per_task": 4, "mem_mb": 8000, "runtime": 60}


def site_map(tmp_path: Path, scheduler: str, **extra: dict) -> Path:
    classes = {name: dict(CPU) for name in CLASSES}
    classes |= {"GPU_1": dict(GPU_1), "GPU_NODE_DDP": dict(NODE), "GPU_MULTINODE_DDP": dict(NODE)}
    for name, keys in extra.items():
        classes[name] |= keys
    path = tmp_path / f"{scheduler}.yaml"
    path.write_text(yaml.safe_dump({"scheduler": scheduler, "account": "proj", "classes": classes}))
    return path


def resources(tmp_path: Path, scheduler: str, name: str, **extra: dict) -> dict:
    site = load_site([site_map(tmp_path, scheduler, **extra)], environ={})
    found = class_resources(name, site)
    found["runtime"] = found["runtime"](None, 1)
    return found


def test_slurm_one_gpu_job_and_a_ddp_node(tmp_path):
    gpu = resources(tmp_path, "slurm", "GPU_1", GPU_1={"slurm_partition": "p"})
    assert gpu == {
        "slurm_partition": "p",
        "slurm_account": "proj",
        "gpu": 1,
        "tasks_per_gpu": 0,
        "cpus_per_task": 8,
        "mem_mb": 64000,
        "runtime": 240,
        "disk_mb": 10000,
    }
    ddp = resources(tmp_path, "slurm", "GPU_NODE_DDP")
    assert ddp["gres"] == "gpu:4" and ddp["mpi"] == "srun" and "gpu" not in ddp
    assert (ddp["nodes"], ddp["tasks_per_node"], ddp["tasks_per_gpu"]) == (1, 4, 0)
    site = load_site([site_map(tmp_path, "slurm")], environ={})
    assert launch_of("GPU_NODE_DDP", site) == (
        "export SRUN_CPUS_PER_TASK=8; srun --nodes=1 --ntasks-per-node=4"
    )
    assert launch_of("GPU_1", site) == ""
    # in the image (no srun there): torchrun on the node; over nodes it cannot
    assert launch_of("GPU_NODE_DDP", site, contained=True) == (
        "torchrun --standalone --nnodes=1 --nproc-per-node=4"
    )
    site = load_site([site_map(tmp_path, "slurm", GPU_MULTINODE_DDP={"nodes": 2})], environ={})
    with pytest.raises(ConfigError, match="over 2 nodes needs srun, which the image does not"):
        launch_of("GPU_MULTINODE_DDP", site, contained=True)


def test_lsf_asks_for_exclusive_gpus_and_charges_the_project(tmp_path):
    gpu = resources(tmp_path, "lsf", "GPU_1", GPU_1={"lsf_queue": "gpuv100"})
    assert gpu["lsf_extra"] == '-gpu "num=1:mode=exclusive_process"'
    assert gpu["lsf_project"] == "proj" and gpu["lsf_queue"] == "gpuv100"
    assert "gpu" not in gpu and "slurm_account" not in gpu
    # a DDP node: one torchrun holds every rank's cores; the map's own lsf_extra is kept
    ddp = resources(tmp_path, "lsf", "GPU_NODE_DDP", GPU_NODE_DDP={"lsf_extra": "-R a100"})
    assert ddp["lsf_extra"] == '-gpu "num=4:mode=exclusive_process" -R a100'
    assert ddp["cpus_per_task"] == 32 and "mpi" not in ddp
    site = load_site([site_map(tmp_path, "lsf")], environ={})
    assert launch_of("GPU_NODE_DDP", site) == (
        "torchrun --standalone --nnodes=1 --nproc-per-node=4"
    )
    assert "-gpu" not in str(class_resources("CPU_PREP", site))


def test_htcondor_requests_gpus_memory_cores_and_group(tmp_path):
    gpu = resources(tmp_path, "htcondor", "GPU_1", GPU_1={"universe": "container"})
    assert gpu["request_gpus"] == 1 and gpu["htcondor_request_mem_mb"] == 64000
    assert gpu["universe"] == "container"
    assert gpu["htcondor_submit_accounting_group"] == "proj"
    assert "request_gpus" not in resources(tmp_path, "htcondor", "CPU_SMALL")


def test_kubernetes_asks_for_nvidia_gpus(tmp_path):
    gpu = resources(tmp_path, "kubernetes", "GPU_1")
    assert gpu["gpu"] == 1 and gpu["gpu_manufacturer"] == "nvidia"
    assert "gpu" not in resources(tmp_path, "kubernetes", "CPU_PREP")


@pytest.mark.parametrize("scheduler", ["lsf", "htcondor", "kubernetes"])
def test_multi_node_ddp_is_refused_where_the_launch_is_one_host(tmp_path, scheduler):
    path = site_map(tmp_path, scheduler, GPU_MULTINODE_DDP={"nodes": 2})
    with pytest.raises(ConfigError, match="class GPU_MULTINODE_DDP asks for 2 nodes"):
        load_site([path], environ={})


def test_keys_the_layer_derives_are_refused_with_the_generic_name(tmp_path):
    path = site_map(tmp_path, "slurm", GPU_1={"gres": "gpu:1"})
    with pytest.raises(ConfigError, match="class GPU_1 sets gres, which the site layer derives"):
        load_site([path], environ={})
    path = site_map(tmp_path, "slurm", GPU_1={"gpus": "one"})
    with pytest.raises(ConfigError, match="gpus must be a whole number"):
        load_site([path], environ={})
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"scheduler": "pbs", "classes": {}}))
    with pytest.raises(ConfigError, match="unknown scheduler 'pbs'"):
        load_site([path], environ={})


SCHEDULER_WORDS = re.compile(
    r"\b(slurm\w*|srun|sbatch|gres|qos|partition|lsf\w*|bsub|blaunch|mpirun|torchrun|"
    r"request_gpus|htcondor|condor|kubernetes|nvidia\.com)\b",
    re.IGNORECASE,
)


def test_no_rule_names_a_scheduler_or_reads_a_resource_in_its_command():
    """Rules ask for classes only: the scheduler's words live in the site layer."""
    for path in sorted((ROOT / "rules").glob("*.smk")) + [ROOT / "Snakefile"]:
        code = "\n".join(
            line.split("#", 1)[0] for line in path.read_text().splitlines()
        )  # comments may explain
        assert not SCHEDULER_WORDS.findall(code), (path.name, SCHEDULER_WORDS.findall(code))
        assert "{resources." not in code, path.name
