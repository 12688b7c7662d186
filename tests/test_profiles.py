"""What each profile asks the scheduler for, read from Snakemake's own dry-run.

Every dry-run works in a copy of the workflow (``workdir``), never in the checkout: what a
user ran there before (``make demo``) must not change what these tests see.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_repo


def snakemake(cwd: Path, *args: str, account: str | None = "IscrB_TEST"):
    """Snakemake as a user runs it, with ``LEONARDO_ACCOUNT`` set to ``account`` and the DCGP
    budget ``LEONARDO_DCGP_ACCOUNT`` to ``<account>_DCGP`` (None: both unset)."""
    names = ("LEONARDO_ACCOUNT", "LEONARDO_DCGP_ACCOUNT")
    env = {k: v for k, v in os.environ.items() if k not in names}
    if account is not None:
        env |= {"LEONARDO_ACCOUNT": account, "LEONARDO_DCGP_ACCOUNT": f"{account}_DCGP"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


def job_resources(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) for every job a dry-run lists."""
    jobs, rule = [], None
    for line in dry_run_output.splitlines():
        if match := re.match(r"^\s*(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif (match := re.match(r"^\s+resources: (.*)", line)) and rule:
            jobs.append((rule, dict(kv.split("=", 1) for kv in match.group(1).split(", "))))
            rule = None
    return jobs


def group_jobs(dry_run_output: str) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """(group, its jobs) for every group job a dry-run lists: one submission each."""
    groups: list[tuple[str, list[str]]] = []
    for line in dry_run_output.splitlines():
        if match := re.search(r"Group job (\w+) \(jobs in lexicogr. order\):", line):
            groups.append((match.group(1), []))
        elif groups and line.startswith("    "):
            groups[-1][1].append(line)
        elif line.strip() and groups and not line.startswith("    "):
            groups.append(("", []))  # a line outside any group ends the last one
    return [(name, job_resources("\n".join(lines))) for name, lines in groups if name]


def dry_run(cwd: Path, *args: str, account: str | None = "IscrB_TEST"):
    result = snakemake(cwd, "-n", *args, account=account)
    assert result.returncode == 0, result.stderr[-3000:]
    return job_resources(result.stdout)


LEONARDO = ["--profile", "profiles/leonardo", "--configfile", "config/leonardo.yaml"]
DEBUG = ["--profile", "profiles/leonardo", "--profile", "profiles/leonardo-debug"]
SITE = yaml.safe_load((ROOT / "profiles/leonardo/resources.yaml").read_text())["classes"]


def rules_of(jobs, *names):
    return [res for rule, res in jobs if rule in names]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"), "tests/ddp.yaml")


@pytest.fixture(scope="module")
def leonardo(workdir) -> list[tuple[str, dict[str, str]]]:
    return dry_run(workdir, *LEONARDO)


def test_leonardo_gpu_rules_ask_for_one_gpu_and_their_memory(leonardo):
    train = rules_of(leonardo, "distance_train")
    assert len(train) == 6  # disnet, zhu x 3 seeds
    for res in train:
        assert res["slurm_partition"] == "boost_usr_prod" and res["qos"] == "normal"
        assert res["gpu"] == "1" and res["tasks_per_gpu"] == "0"
        assert res["mem_mb"] == str(SITE["GPU_1"]["mem_mb"]) and int(res["mem_mb"]) > 8000
        assert res["cpus_per_task"] == str(SITE["GPU_1"]["cpus_per_task"])
        assert res["slurm_account"] == "IscrB_TEST"
        assert res["runtime"] == str(SITE["GPU_1"]["runtime"])
        assert "mpi" not in res


def test_leonardo_reference_predictors_need_no_gpu(leonardo):
    references = rules_of(leonardo, "distance_reference")
    assert len(references) == 2  # mean, pinhole
    assert all(r["slurm_partition"] == "lrd_all_serial" and "gpu" not in r for r in references)


def test_leonardo_preparation_runs_on_cpu_partitions(leonardo):
    prep = rules_of(leonardo, "distance_index", "distance_extract")
    assert len(prep) == 4
    for res in prep:
        assert res["slurm_partition"] == "dcgp_usr_prod" and "gpu" not in res
        assert res["cpus_per_task"] == str(SITE["CPU_PREP"]["cpus_per_task"])
        assert res["slurm_account"] == "IscrB_TEST_DCGP"  # DCGP's own budget
    others = {
        res["slurm_partition"]
        for res in rules_of(leonardo, "distance_evaluate", "distance_figures", "report")
    }
    assert others == {"lrd_all_serial"}
    accounts = {
        (res["slurm_partition"], res["slurm_account"])
        for _, res in leonardo
        if "slurm_partition" in res  # local rules (`all`) are not submitted
    }
    assert accounts == {
        ("lrd_all_serial", "IscrB_TEST"),
        ("dcgp_usr_prod", "IscrB_TEST_DCGP"),
        ("boost_usr_prod", "IscrB_TEST"),
    }


def test_debug_overlay_moves_gpu_jobs_to_the_debug_qos(workdir, leonardo):
    out = snakemake(workdir, "-n", *DEBUG, "--configfile", "config/leonardo.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    debug = job_resources(out.stdout)
    # a group job's time is the sum of its runs': one run each on the debug QOS
    groups = group_jobs(out.stdout)
    assert groups and all(len(members) == 1 for _, members in groups)
    train = rules_of(debug, "distance_train")
    assert train and all(r["qos"] == "boost_qos_dbg" and r["runtime"] == "30" for r in train)
    assert all(r["gpu"] == "1" and r["slurm_partition"] == "boost_usr_prod" for r in train)
    prep = rules_of(debug, "distance_index")
    assert prep and all(r["qos"] == "dcgp_qos_dbg" and r["runtime"] == "30" for r in prep)
    assert all(int(r["runtime"]) <= 30 for _, r in debug if "slurm_partition" in r)


def test_ddp_experiments_launch_one_rank_per_gpu_through_srun(workdir):
    out = snakemake(workdir, "-n", "-p", *LEONARDO, "tests/ddp.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = job_resources(out.stdout)
    ddp = rules_of(jobs, "distance_train_ddp")
    assert len(ddp) == 6  # disnet_node, disnet_multi x 3 seeds
    for res in ddp:
        assert res["mpi"] == "srun" and res["tasks_per_node"] == "4" and res["gres"] == "gpu:4"
        assert res["tasks_per_gpu"] == "0" and "gpu" not in res
    assert {r["nodes"] for r in ddp} == {"1", "4"}
    assert "srun --nodes=1 --ntasks-per-node=4 python scripts/distance.py train" in out.stdout
    assert "--devices 4 --num-nodes 4" in out.stdout
    assert "export SRUN_CPUS_PER_TASK=8;" in out.stdout
    single = [line for line in out.stdout.splitlines() if "--devices 1 " in line]
    assert single and not any("srun" in line for line in single)


def test_unset_account_still_dry_runs_with_a_warning(workdir, leonardo):
    unset = snakemake(workdir, "-n", *LEONARDO, account=None)
    assert unset.returncode == 0, unset.stderr[-3000:]
    assert "warning: profiles/leonardo/resources.yaml: account is $LEONARDO_ACCOUNT" in (
        unset.stderr
    )
    jobs = job_resources(unset.stdout)
    assert sorted(rule for rule, _ in jobs) == sorted(rule for rule, _ in leonardo)
    assert all("slurm_account" not in res for _, res in jobs)


def test_unset_account_stops_a_real_run_before_any_job(tmp_path):
    workdir = copy_repo(tmp_path)
    result = snakemake(workdir, "--cores", "1", "--executor", "local", *LEONARDO, account=None)
    assert result.returncode != 0
    assert (
        "error: profiles/leonardo/resources.yaml: account is $LEONARDO_ACCOUNT, which is not "
        "set; export LEONARDO_ACCOUNT=<your budget>"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "logs").exists() and not (workdir / "results").exists()


def test_local_runs_train_on_cpu(workdir):
    train = [res for rule, res in dry_run(workdir, "--cores", "2") if rule == "distance_train"]
    assert train and all(res["gpu"] == "0" and "slurm_partition" not in res for res in train)


def test_leonardo_wsi_jobs_go_to_their_partitions(leonardo):
    train = rules_of(leonardo, "wsi_train")
    assert len(train) == 2 * 9 * 3  # camelyon16, tcga_nsclc x 9 experiments x 3 seeds
    for res in train + rules_of(leonardo, "wsi_features"):
        assert res["slurm_partition"] == "boost_usr_prod" and res["gpu"] == "1"
    prep = rules_of(leonardo, "wsi_segment", "wsi_tile", "wsi_graph")
    assert len(prep) == 6 and all(r["slurm_partition"] == "dcgp_usr_prod" for r in prep)
    assert not rules_of(leonardo, "wsi_demo")  # real data only
    labels = rules_of(leonardo, "wsi_labels")  # tcga_nsclc's labels from its GDC manifests
    assert len(labels) == 1 and labels[0]["slurm_partition"] == "lrd_all_serial"
    camelyon16 = rules_of(leonardo, "wsi_camelyon16")  # camelyon16's from its official folders
    assert len(camelyon16) == 1 and camelyon16[0]["slurm_partition"] == "lrd_all_serial"
    lesions = rules_of(leonardo, "wsi_lesions")  # camelyon16's lesion XMLs
    assert len(lesions) == 1 and lesions[0]["slurm_partition"] == "dcgp_usr_prod"


def test_leonardo_flip_pretrains_on_the_4_gpus_of_a_node(leonardo):
    for rule in ("flip_pretrain_ddp", "flip_tune_ddp"):
        jobs = rules_of(leonardo, rule)
        assert len(jobs) == 3  # mask 0, 0.5, 0.75 x seed 0
        for res in jobs:
            assert res["slurm_partition"] == "boost_usr_prod" and res["gres"] == "gpu:4"
            assert res["tasks_per_node"] == "4" and res["nodes"] == "1"
    assert not rules_of(leonardo, "flip_pretrain", "flip_tune")  # no single-GPU pre-training
    for rule in ("flip_hash", "flip_filter"):
        jobs = rules_of(leonardo, rule)
        assert len(jobs) == 42  # 41,408 shards in groups of 1000, fixed before any job runs
        assert all(r["slurm_partition"] == "dcgp_usr_prod" for r in jobs)
    dedup = rules_of(leonardo, "flip_dedup")  # one job per hash bucket, over every group
    assert len(dedup) == 16 and all(r["slurm_partition"] == "dcgp_usr_prod" for r in dedup)
    assert not rules_of(leonardo, "flip_demo")


def test_leonardo_sequence_jobs_go_to_their_partitions(leonardo):
    train = rules_of(leonardo, "sequence_train")
    # xpresso_human serves the 8 mrna experiments only; human all 10 with 3 seeds each and
    # the three 10-fold protein experiments (perceiver, composition, xpresso) with 10 folds
    assert len(train) == (8 + 10) * 3 + 3 * 10
    assert all(r["slurm_partition"] == "boost_usr_prod" and r["gpu"] == "1" for r in train)
    encode = rules_of(leonardo, "sequence_encode")
    assert len(encode) == 2 and all(r["slurm_partition"] == "dcgp_usr_prod" for r in encode)
    assert not rules_of(leonardo, "sequence_demo")


def test_leonardo_watermark_generates_on_gpus_and_scores_on_cpus(leonardo):
    generate = rules_of(leonardo, "watermark_generate")
    # 6 KGW experiments (beam switched on), unigram and synthid, x 3 seeds
    assert len(generate) == 8 * 3
    assert all(r["slurm_partition"] == "boost_usr_prod" and r["gpu"] == "1" for r in generate)
    # the oracle LM's perplexity and the paraphrasing LM: GPUs
    for rule in ("watermark_evaluate", "watermark_paraphrase"):
        jobs = rules_of(leonardo, rule)
        assert len(jobs) == 24 and all(r["gpu"] == "1" for r in jobs), rule
    for rule in ("watermark_attack", "watermark_detect"):
        jobs = rules_of(leonardo, rule)
        assert len(jobs) == 24 and all(r["slurm_partition"] == "lrd_all_serial" for r in jobs)
    prompts = rules_of(leonardo, "watermark_prompts")  # c4 x opt-1.3b's tokenizer
    assert len(prompts) == 1 and prompts[0]["slurm_partition"] == "lrd_all_serial"
    assert not rules_of(leonardo, "watermark_demo", "watermark_lm")  # real data and models


def test_leonardo_nerf_trains_on_gpus_and_evaluates_on_cpus(leonardo):
    train = rules_of(leonardo, "nerf_train")
    assert len(train) == 3 * 2 * 3  # 3 DTU scans x (barf, no_refine) x 3 seeds
    # the nerfstudio engine: nerfacto with and without SO3xR3, instant-ngp
    nerfstudio = rules_of(leonardo, "nerf_train_nerfstudio")
    assert len(nerfstudio) == 3 * 3 * 3
    for rule in train + nerfstudio:
        assert rule["slurm_partition"] == "boost_usr_prod" and rule["gpu"] == "1"
    assert len(rules_of(leonardo, "nerf_evaluate")) == 3 * 5 * 3
    for rule in ("nerf_prepare", "nerf_evaluate", "nerf_figures"):
        jobs = rules_of(leonardo, rule)
        assert jobs and all(r["slurm_partition"] == "lrd_all_serial" for r in jobs), rule
    assert len(rules_of(leonardo, "nerf_prepare")) == 3
    assert not rules_of(leonardo, "nerf_demo")  # real scans


PROFILE = yaml.safe_load((ROOT / "profiles/leonardo/config.yaml").read_text())


def test_leonardo_runs_short_gpu_runs_one_after_another_in_group_jobs(workdir):
    out = snakemake(workdir, "-n", *LEONARDO)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs, groups = job_resources(out.stdout), group_jobs(out.stdout)
    size = dict(item.split("=") for item in PROFILE["group-components"])
    member_runtime = {
        rule: int(value.split("=")[1])
        for rule, value in (item.split(":") for item in PROFILE["set-resources"])
    }
    grouped = {rule for rule, _ in (item.split("=") for item in PROFILE["groups"])}
    counts = {}
    for name, members in groups:
        counts[name] = counts.get(name, 0) + 1
        assert 1 <= len(members) <= int(size[name]), name
        assert all(rule in grouped for rule, _ in members), name
        # one GPU each, consecutive: the group's time is the sum of its runs', within 24 h
        assert all(res["gpu"] == "1" and res["slurm_partition"] == "boost_usr_prod"
                   for _, res in members)  # fmt: skip
        assert sum(member_runtime[rule] for rule, _ in members) <= SITE["GPU_1"]["max_runtime"]
    # every run of a grouped rule is in a group: 54 wsi runs in 9 jobs, 84 sequence runs in 7
    in_groups = [rule for _, members in groups for rule, _ in members]
    for rule in grouped:
        assert in_groups.count(rule) == len(rules_of(jobs, rule)), rule
    assert counts["wsi_runs"] == -(-len(rules_of(jobs, "wsi_train")) // int(size["wsi_runs"]))
    assert len(rules_of(jobs, "sequence_train")) == 84
    assert counts["sequence_runs"] == -(-84 // int(size["sequence_runs"]))
    submitted = len(jobs) - len(in_groups) + len(groups) - len(rules_of(jobs, "all"))
    print(f"Leonardo dry-run: {len(jobs)} jobs, {len(groups)} group jobs, {submitted} submissions")
    assert submitted < len(jobs) - 150  # 220 GPU jobs -> far fewer GPU allocations
