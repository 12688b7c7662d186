"""The smoke config (config/smoke.yaml after config/leonardo.yaml) on Leonardo's debug QOS: the
whole Leonardo DAG with one seed, every job within the QOS's 30 min, read from Snakemake's own
dry-run and from the capacity plan.

Job counts are computed here from the merged config (datasets x enabled experiments x seeds,
shard groups, dedup buckets), never copied from a dry-run. Every run works in a copy of the
workflow, never in the checkout.
"""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from braceexpand import braceexpand

from tests.conftest import ROOT, copy_repo
from workflow.common.config import deep_merge, load_yaml, validate_config

PROFILES = ["--profile", "profiles/leonardo", "--profile", "profiles/leonardo-debug"]
CONFIGS = ["config/leonardo.yaml", "config/smoke.yaml"]
SMOKE = [*PROFILES, "--configfile", *CONFIGS]
LEONARDO = ["--profile", "profiles/leonardo", "--configfile", "config/leonardo.yaml"]
MAPS = ["profiles/leonardo/resources.yaml", "profiles/leonardo-debug/resources.yaml"]
SITE = yaml.safe_load((ROOT / MAPS[0]).read_text())["classes"]
DEBUG = yaml.safe_load((ROOT / MAPS[1]).read_text())["classes"]
LIMIT_MIN = 30  # the debug QOS's wall-time limit, every class
#: flip_evaluate's throughput entry is one fixed time per job (1 h, for the whole ImageNet-1k
#: train + val): the plan cannot scale it to the smoke's 15,000-image slice.
FIXED_PER_JOB = {"flip_evaluate"}
#: GPU jobs the plan may leave unestimated: none (the smoke config gives every size it needs).
NOT_ESTIMATED: set[str] = set()
#: Wildcards that name a job's slice (shard group, dedup bucket) or seed, not its place in the DAG.
SLICE_WILDCARDS = {"seed", "group", "bucket"}


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"LEONARDO_ACCOUNT": "IscrB_TEST", "LEONARDO_DCGP_ACCOUNT": "IscrB_DCGP"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


def dry_run(cwd: Path, *args: str) -> str:
    result = snakemake(cwd, "-n", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(", "))


def jobs_of(output: str) -> list[dict[str, Any]]:
    """Every job a dry-run lists: rule, wildcards and resources."""
    jobs: list[dict[str, Any]] = []
    for line in output.splitlines():
        if match := re.match(r"^\s*(?:local)?rule (\w+):", line):
            jobs.append({"rule": match.group(1), "wildcards": {}, "resources": {}})
        elif jobs and (match := re.match(r"^\s+wildcards: (.*)", line)):
            jobs[-1]["wildcards"] = pairs(match.group(1))
        elif jobs and (match := re.match(r"^\s+resources: (.*)", line)):
            jobs[-1]["resources"] = pairs(match.group(1))
    return jobs


def group_runtimes(output: str) -> list[int]:
    """Per group job (one submission): the summed runtime of its members."""
    groups: list[list[int]] = []
    inside = False
    for line in output.splitlines():
        if "Group job" in line and "(jobs in lexicogr. order)" in line:
            groups.append([])
            inside = True
        elif inside and line.startswith("    "):
            if match := re.search(r"[ ,]runtime=(\d+)", line):
                groups[-1].append(int(match.group(1)))
        elif line.strip():
            inside = False
    return [sum(g) for g in groups]


def submitted(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs that go to SLURM (local rules such as `all` carry no partition)."""
    return [j for j in jobs if "slurm_partition" in j["resources"]]


def is_gpu(res: Mapping[str, str]) -> bool:
    return int(res.get("gpu", 0)) > 0 or res.get("gres", "").startswith("gpu:")


# ---------------------------------------------------------------------------------------------
# What the smoke config implies, computed from the config alone


def smoke_config() -> dict[str, Any]:
    """config/config.yaml with leonardo.yaml and smoke.yaml merged over it, as Snakemake does."""
    config = load_yaml(ROOT / "config/config.yaml")
    for name in CONFIGS:
        config = deep_merge(config, load_yaml(ROOT / name))
    return validate_config(config)


class Expected:
    """Jobs per rule of the smoke config: datasets x enabled experiments x seeds."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()

    def datasets(self, track: str) -> dict[str, Mapping[str, Any]]:
        entries = self.config[track]["datasets"].items()
        return {name: entry for name, entry in entries if entry.get("enabled", True)}

    def settings(self, track: str, experiment: str) -> dict[str, Any]:
        section = self.config[track]
        return deep_merge(section.get("train", {}), section["experiments"][experiment] or {})

    def seeds(self, settings: Mapping[str, Any]) -> list[int]:
        if settings.get("folds"):  # a k-fold experiment: its seeds are its held-out folds
            return list(settings.get("seeds") or range(settings["folds"]))
        return list(settings.get("seeds") or self.config["seeds"])

    def runs(self, track: str, keep=lambda dataset, settings: True) -> int:
        total = 0
        for entry in self.datasets(track).values():
            for experiment in self.config[track]["experiments"]:
                s = self.settings(track, experiment)
                if s.get("enabled", True) and keep(entry, s):
                    total += len(self.seeds(s))
        return total

    def per_dataset(self, track: str, *rules: str, keep=lambda entry: True) -> None:
        n = sum(1 for entry in self.datasets(track).values() if keep(entry))
        for rule in rules:
            self.counts[rule] += n

    def trained(self, track: str, rule: str, keep=lambda entry, s: True) -> None:
        """A training rule and its DDP twin, split by the experiment's resource class."""
        self.counts[rule] += self.runs(
            track, lambda e, s: keep(e, s) and s.get("resources", "GPU_1") == "GPU_1"
        )
        self.counts[f"{rule}_ddp"] += self.runs(
            track, lambda e, s: keep(e, s) and s.get("resources", "GPU_1") != "GPU_1"
        )

    def demo_rules(self, track: str) -> None:
        self.per_dataset(track, f"{track}_demo", keep=lambda e: e.get("demo", False))

    def build(self) -> Counter[str]:
        references = ("mean", "pinhole")
        self.demo_rules("distance")
        self.per_dataset("distance", "distance_index", "distance_figures")
        self.counts["distance_extract"] += 3 * len(self.datasets("distance"))  # per split
        self.trained("distance", "distance_train", lambda e, s: s.get("model") not in references)
        self.counts["distance_reference"] += self.runs(
            "distance", lambda e, s: s.get("model") in references
        )
        self.counts["distance_evaluate"] += self.runs("distance")

        self.demo_rules("wsi")
        own = lambda entry: not entry.get("mil4wsi")  # noqa: E731  tiled and encoded here
        self.per_dataset("wsi", "wsi_labels", keep=lambda e: bool(e.get("manifests")))
        self.per_dataset(
            "wsi", "wsi_camelyon16", keep=lambda e: own(e) and bool(e.get("camelyon16"))
        )
        annotated = lambda e: own(e) and any(e.get(k) for k in ("demo", "camelyon16", "lesions"))  # noqa: E731
        self.per_dataset("wsi", "wsi_lesions", keep=annotated)
        self.per_dataset("wsi", "wsi_mil4wsi", keep=lambda e: not own(e))
        self.per_dataset("wsi", "wsi_segment", "wsi_tile", "wsi_features", "wsi_graph", keep=own)
        self.per_dataset("wsi", "wsi_figures")
        self.trained("wsi", "wsi_train")
        self.counts["wsi_evaluate"] += self.runs("wsi")

        # the published Xpresso files hold no proteins: mrna experiments only
        serves = lambda e, s: not e.get("xpresso") or s.get("task", "mrna") == "mrna"  # noqa: E731
        self.demo_rules("sequence")
        self.per_dataset("sequence", "sequence_encode", "sequence_figures")
        self.trained("sequence", "sequence_train", serves)
        self.counts["sequence_evaluate"] += self.runs("sequence", serves)

        flip = self.config["flip"]
        self.demo_rules("flip")
        for entry in self.datasets("flip").values():
            shards = len(list(braceexpand(entry["shards"])))
            groups = math.ceil(shards / flip["filter"]["shards_per_group"])
            self.counts["flip_hash"] += groups
            self.counts["flip_filter"] += groups
            self.counts["flip_dedup"] += flip["filter"]["dedup_buckets"]
        self.per_dataset("flip", "flip_figures")
        self.trained("flip", "flip_pretrain")
        self.trained("flip", "flip_tune")
        self.counts["flip_evaluate"] += self.runs("flip")

        wm = self.config["watermark"]
        settings = [self.settings("watermark", e) for e in wm["experiments"]]
        generators = {s["model"] for s in settings if s.get("enabled", True)}
        used = generators | {wm.get("oracle"), wm["paraphrase"].get("model")}
        self.demo_rules("watermark")
        self.counts["watermark_lm"] += sum(
            1 for name, m in wm["models"].items() if m.get("demo") and name in used
        )
        self.counts["watermark_prompts"] += len(self.datasets("watermark")) * len(generators)
        self.per_dataset("watermark", "watermark_figures")
        runs = self.runs("watermark")
        for rule in ("generate", "attack", "detect", "evaluate"):
            self.counts[f"watermark_{rule}"] += runs
        self.counts["watermark_paraphrase"] += runs if wm["paraphrase"].get("model") else 0

        self.demo_rules("nerf")
        self.per_dataset("nerf", "nerf_prepare", "nerf_figures")
        engine = lambda s: s.get("engine", "builtin")  # noqa: E731
        self.counts["nerf_train"] += self.runs("nerf", lambda e, s: engine(s) == "builtin")
        self.counts["nerf_train_nerfstudio"] += self.runs(
            "nerf", lambda e, s: engine(s) == "nerfstudio"
        )
        self.counts["nerf_evaluate"] += self.runs("nerf")

        self.counts["report"] += 1
        self.counts["all"] += 1
        return Counter({rule: n for rule, n in self.counts.items() if n})


# ---------------------------------------------------------------------------------------------
# Fixtures: one copy of the workflow, one dry-run of each config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"), "tests/ddp.yaml")


@pytest.fixture(scope="module")
def smoke_output(workdir: Path) -> str:
    return dry_run(workdir, *SMOKE)


@pytest.fixture(scope="module")
def smoke(smoke_output: str) -> list[dict[str, Any]]:
    return jobs_of(smoke_output)


@pytest.fixture(scope="module")
def leonardo(workdir: Path) -> list[dict[str, Any]]:
    return jobs_of(dry_run(workdir, *LEONARDO))


def test_smoke_dry_run_has_the_jobs_its_config_implies(smoke):
    counts = Counter(job["rule"] for job in smoke)
    expected = Expected(smoke_config()).build()
    print(f"smoke dry-run: {len(smoke)} jobs, {len(submitted(smoke))} submitted")
    for rule, n in sorted(counts.items()):
        print(f"  {rule:24} {n:4} (config: {expected.get(rule, 0)})")
    assert counts == expected
    assert len(smoke) == sum(expected.values())


def test_every_smoke_job_fits_the_debug_qos(smoke, smoke_output):
    jobs = submitted(smoke)
    assert jobs
    for job in jobs:
        res, what = job["resources"], f"{job['rule']} {job['wildcards']}"
        assert int(res["runtime"]) <= LIMIT_MIN, what
        assert int(res.get("nodes", 1)) <= DEBUG["GPU_MULTINODE_DDP"]["nodes"] <= 2, what
        if is_gpu(res):
            assert res["qos"] == "boost_qos_dbg", what
            assert res["slurm_partition"] == SITE["GPU_1"]["slurm_partition"], what
        elif res["slurm_partition"] == SITE["CPU_PREP"]["slurm_partition"]:
            assert res["qos"] == "dcgp_qos_dbg", what
            assert res["slurm_account"] == "IscrB_DCGP", what
    prep = [j for j in jobs if j["resources"]["slurm_partition"] == "dcgp_usr_prod"]
    assert {j["rule"] for j in prep} >= {"distance_index", "wsi_tile", "flip_filter", "flip_dedup"}
    # the FLIP DDP experiments run too, on a whole node of the debug QOS
    ddp = [j for j in jobs if j["rule"] in ("flip_pretrain_ddp", "flip_tune_ddp")]
    assert ddp and all(j["resources"]["gres"] == "gpu:4" for j in ddp)
    assert all(j["resources"]["nodes"] == "1" for j in ddp)
    # a group job's time is its members' together: one run each on the debug QOS
    groups = group_runtimes(smoke_output)
    assert groups and all(0 < total <= LIMIT_MIN for total in groups)


def test_smoke_has_the_shape_of_the_leonardo_dag_with_one_seed(smoke, leonardo):
    def shape(jobs):
        return {
            (j["rule"], tuple(sorted(
                (k, v) for k, v in j["wildcards"].items() if k not in SLICE_WILDCARDS
            )))
            for j in jobs
        }  # fmt: skip

    assert {j["rule"] for j in leonardo} == {j["rule"] for j in smoke}
    # every dataset x experiment x rule of the full run, seeds and FLIP shard slices aside
    assert shape(leonardo) == shape(smoke)
    seeds = {j["wildcards"]["seed"] for j in smoke if "seed" in j["wildcards"]}
    assert seeds == {"0"}
    assert len({j["wildcards"]["seed"] for j in leonardo if "seed" in j["wildcards"]}) > 1
    assert len(smoke) < len(leonardo)


def test_multinode_ddp_on_the_debug_qos_takes_two_nodes(workdir):
    out = snakemake(workdir, "-n", "-p", *SMOKE, "tests/ddp.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    ddp = [j for j in jobs_of(out.stdout) if j["rule"] == "distance_train_ddp"]
    assert {j["wildcards"]["experiment"] for j in ddp} == {"disnet_node", "disnet_multi"}
    nodes = {j["wildcards"]["experiment"]: j["resources"]["nodes"] for j in ddp}
    assert nodes == {"disnet_node": "1", "disnet_multi": "2"}
    for job in ddp:
        res = job["resources"]
        assert res["qos"] == "boost_qos_dbg" and int(res["runtime"]) <= LIMIT_MIN
        assert res["gres"] == "gpu:4" and res["tasks_per_node"] == "4"
    assert "srun --nodes=2 --ntasks-per-node=4 python scripts/distance.py train" in out.stdout
    assert "--devices 4 --num-nodes 2" in out.stdout


def test_capacity_plan_finds_no_gpu_job_over_the_debug_limit(workdir, smoke, tmp_path):
    md, plan_csv = tmp_path / "plan.md", tmp_path / "plan.csv"
    result = subprocess.run(
        [sys.executable, "scripts/capacity.py", "--configfile", *CONFIGS,
         "--resource-map", *MAPS, "--md", str(md), "--csv", str(plan_csv)],
        cwd=workdir, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(plan_csv.open()))
    estimated = [r for r in rows if r["hours"]]
    hours = sum(float(r["hours"]) for r in estimated)
    gpu_hours = sum(float(r["gpu_hours"]) for r in rows)
    print(f"capacity plan: {len(rows)} GPU jobs, {len(estimated)} estimated, "
          f"{hours:.2f} job-hours, {gpu_hours:.2f} GPU-hours")  # fmt: skip
    # the plan's GPU jobs are the dry-run's (it names DDP training without the _ddp suffix)
    gpu_jobs = Counter(j["rule"].removesuffix("_ddp") for j in smoke if is_gpu(j["resources"]))
    assert Counter(r["rule"] for r in rows) == gpu_jobs
    assert {r["rule"] for r in rows if not r["hours"]} == NOT_ESTIMATED
    assert {float(r["first_attempt_h"]) for r in rows} == {LIMIT_MIN / 60}
    over = [r for r in estimated if float(r["hours"]) * 60 > LIMIT_MIN]
    assert {r["rule"] for r in over} <= FIXED_PER_JOB, [(r["rule"], r["hours"]) for r in over]
    table = yaml.safe_load((ROOT / "config/throughput.yaml").read_text())["jobs"]
    for row in over:  # over only by the one fixed time per job, not by the slice's size
        fixed = [e["hours_per_job"] for e in table[row["rule"]] if "hours_per_job" in e]
        assert fixed and float(row["hours"]) == pytest.approx(fixed[0]), row
    others = [float(r["hours"]) for r in estimated if r["rule"] not in FIXED_PER_JOB]
    assert others and max(others) * 60 <= LIMIT_MIN
