"""The capacity plan (workflow/common/capacity.py, scripts/capacity.py): the plan of
config/leonardo.yaml printed with its numbers checked by hand, a job over its runtime
flagged, a budget too small refused, and the scheduling arithmetic."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from workflow.common.capacity import (
    ClassLimits,
    Estimate,
    Job,
    attempts_needed,
    load_throughput,
    wall_time,
)
from workflow.common.config import ConfigError

SCRIPT = ROOT / "scripts" / "capacity.py"


def plan(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


def rows(path: Path) -> dict[str, dict[str, str]]:
    """CSV rows by job id (rule/dataset/experiment/seed)."""
    with open(path) as fh:
        return {
            "/".join(
                filter(
                    None,
                    [r["rule"], r["dataset"], r["experiment"], r["seed"] and f"seed{r['seed']}"],
                )
            ): r  # fmt: skip
            for r in csv.DictReader(fh)
        }


@pytest.fixture(scope="module")
def leonardo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, dict[str, str]]]:
    out = tmp_path_factory.mktemp("plan")
    result = plan(
        "--configfile", ROOT / "config" / "leonardo.yaml",
        "--profile", ROOT / "profiles" / "leonardo",
        "--budget-gpus", "500", "--budget-hours", "72", "--root", out,
        "--md", out / "plan.md", "--csv", out / "plan.csv",
    )  # fmt: skip
    assert result.stdout == (out / "plan.md").read_text()  # printed as written
    return result.stdout, rows(out / "plan.csv")


def test_leonardo_plan_structure(leonardo) -> None:
    text, table = leonardo
    for heading in ("# Capacity plan", "## Per track", "## Jobs over their class's runtime",
                    "## Budget", "## Not estimated", "## Throughput used"):  # fmt: skip
        assert f"\n{heading}\n" in f"\n{text}"
    for track in ("distance", "wsi", "sequence", "flip", "watermark", "nerf"):
        assert f"\n| {track} | " in text
    assert "- device: A100; retries after a time-out: 2" in text
    assert "- resource map: profiles/leonardo/resources.yaml" in text
    assert "verdict: FITS the budget" in text
    # one row per GPU job: FLIP's 3 experiments x (pre-training, tuning, evaluation)
    assert sum(r["track"] == "flip" for r in table.values()) == 9
    assert {r["resumable"] for r in table.values() if r["rule"] == "flip_evaluate"} == {"no"}
    assert {r["resumable"] for r in table.values() if r["rule"] == "flip_pretrain"} == {"yes"}


def test_leonardo_numbers_by_hand(leonardo) -> None:
    text, table = leonardo
    # FLIP, mask 0: 41,408 shards x 10,000 samples less the held-out shard = 414,070,000;
    # global batch 256 x 4 GPUs = 1,024, partial batch dropped: 404,365 steps = 414,069,760
    # samples; 312e12 x 0.4 / 108.1e9 = 1,154.487 images/s per GPU, x 4 GPUs
    mask0 = table["flip_pretrain/laion400m/flip_mask0/seed0"]
    assert int(mask0["work"]) == 404_365 * 1024
    hours = 404_365 * 1024 / (4 * 312e12 * 0.4 / 108.1e9) / 3600
    assert float(mask0["hours"]) == pytest.approx(hours, abs=1e-4)  # 24.907 h
    assert float(mask0["gpu_hours"]) == pytest.approx(4 * hours, abs=1e-3)
    # over the 24 h cap: a training job resumes - 12 h, then 24 h: 2 attempts
    assert (mask0["attempts"], mask0["resumable"]) == ("2", "yes")
    assert mask0["verdict"] == "over the limit: resumes, 2 attempts"
    assert "| flip_pretrain/laion400m/flip_mask0/seed0 | GPU_NODE_DDP | 24.91 | 4 |" in text
    # tuning: 0.32 of an epoch = ceil(132,502,400 / 1,024) = 129,397 steps, at mask 0's rate
    tune = table["flip_tune/laion400m/flip_mask0/seed0"]
    assert int(tune["work"]) == 129_397 * 1024
    assert float(tune["hours"]) == pytest.approx(
        129_397 * 1024 / (4 * 312e12 * 0.4 / 108.1e9) / 3600, abs=1e-4
    )  # 7.97 h
    # sequence: 16,377 genes (hint) x 60 epochs = 982,620 genes at 2,000 genes/s on one GPU
    perceiver = table["sequence_train/xpresso_human/perceiver_mrna/seed0"]
    assert int(perceiver["work"]) == 982_620
    assert float(perceiver["hours"]) == pytest.approx(982_620 / 2000 / 3600, abs=1e-4)
    assert perceiver["verdict"] == "ok"


def test_a_job_over_its_runtime_is_flagged_and_a_small_budget_does_not_fit(
    tmp_path: Path,
) -> None:
    config = tmp_path / "big.yaml"
    config.write_text(yaml.safe_dump({
        "tracks": ["sequence"],
        "sequence": {
            "datasets": {"demo": {"enabled": False},
                         "big": {"xpresso": "/nonexistent", "train_samples": 100_000}},
            "train": {"max_epochs": 100, "batch_size": 100, "warmup_fraction": 0.05},
            "experiments": {"perceiver_mrna": {"model": "perceiver", "seeds": [0, 1]},
                            "xpresso_mrna": {"model": "xpresso", "seeds": [0], "max_epochs": 100,
                                             "resources": "GPU_NODE_DDP"}},
        },
    }))  # fmt: skip
    throughput = tmp_path / "throughput.yaml"
    throughput.write_text(yaml.safe_dump({
        "device": "gpu",
        "devices": {"gpu": {"about": "a test device"}},
        "jobs": {"sequence_train": [
            {"match": {"model": "xpresso"}, "device": "gpu", "per_s": 100, "estimate": "test"},
            {"device": "gpu", "per_s": 50, "startup_s": 360, "measured": "test"},
        ]},
    }))  # fmt: skip
    site = ROOT / "profiles" / "leonardo" / "resources.yaml"
    result = plan(
        "--configfile", config, "--resource-map", site, "--retries", "2",
        "--throughput", throughput, "--budget-gpus", "4", "--budget-hours", "40",
        "--csv", tmp_path / "plan.csv", "--root", tmp_path,
    )  # fmt: skip
    table = rows(tmp_path / "plan.csv")
    # perceiver: 100 epochs x 100,000 genes = 1e7 at 50/s = 200,000 s + 360 s = 55.6 h on 1 GPU:
    # over the 24 h cap; resuming, 12 + 24 + 24 h = 60 h >= 55.6 h: 3 attempts, 2 retries allow
    perceiver = table["sequence_train/big/perceiver_mrna/seed0"]
    assert float(perceiver["hours"]) == pytest.approx(200_360 / 3600, abs=1e-4)
    assert perceiver["verdict"] == "over the limit: resumes, 3 attempts"
    # xpresso on a node's 4 GPUs: 1e7 / (100 x 4) = 25,000 s = 6.94 h; 27.8 GPU-hours
    xpresso = table["sequence_train/big/xpresso_mrna/seed0"]
    assert (xpresso["gpus"], xpresso["verdict"]) == ("4", "ok")
    assert float(xpresso["gpu_hours"]) == pytest.approx(4 * 25_000 / 3600, abs=1e-3)
    text = result.stdout
    assert (
        "| sequence_train/big/perceiver_mrna/seed0 | GPU_1 | 55.66 | 1 | 12 h (cap 24 h) | yes |"
        in text
    )
    # 2 x 55.66 + 27.78 = 139.1 GPU-hours of 4 x 40 = 160: fits; the wall time does not: the
    # two perceiver runs start at once (longest first), xpresso's 4 GPUs are free only after
    # them: 55.66 + 6.94 = 62.6 h
    assert "GPU-hours: 139.1 of 160 (4 GPUs x 40 h): fits" in text
    assert "62.6 h of 40 h: DOES NOT FIT" in text
    assert "verdict: DOES NOT FIT the budget" in text
    # with one retry the perceiver runs cannot finish at all
    one = plan("--configfile", config, "--resource-map", site, "--retries", "1",
               "--throughput", throughput, "--root", tmp_path).stdout  # fmt: skip
    assert "CANNOT FINISH: needs 3 attempts, the profile allows 2" in one


def test_attempts_by_hand() -> None:
    leonardo = ClassLimits(gpus=1, processes=1, first_min=720, cap_min=1440)
    assert attempts_needed(700, leonardo, resumable=True) == 1
    assert attempts_needed(1000, leonardo, resumable=True) == 2  # 720 + 1440
    assert attempts_needed(2200, leonardo, resumable=True) == 3  # 720 + 1440 + 1440
    assert attempts_needed(1000, leonardo, resumable=False) == 2  # one attempt of 1440
    assert attempts_needed(1500, leonardo, resumable=False) is None  # over the cap
    uncapped = ClassLimits(gpus=1, processes=1, first_min=60, cap_min=None)
    assert attempts_needed(100, uncapped, resumable=False) == 2


def estimate(job_id: str, gpus: int, hours: float, after: tuple[str, ...] = ()) -> Estimate:
    job = Job("t", job_id, "d", None, None, "GPU_1", "k", after=after)
    return Estimate(job, ClassLimits(gpus, gpus, 720, 1440), hours, "test", 1)


def test_wall_time_by_hand() -> None:
    a, c = estimate("a", 4, 10.0), estimate("c", 1, 3.0)
    b = estimate("b", 4, 5.0, after=("a/d",))
    # 4 GPUs: a (the longest chain, 15 h) first, then b; c waits until a and b are done
    assert wall_time([a, b, c], 4) == (18.0, [])
    # 5 GPUs: a and c at once, b after a
    assert wall_time([a, b, c], 5) == (15.0, [])
    # 2 GPUs: a and b never fit
    assert wall_time([a, b, c], 2) == (3.0, ["a/d", "b/d"])


def test_throughput_entries_say_where_they_come_from() -> None:
    table = {"device": "x", "devices": {"x": {}}, "jobs": {"k": [{"device": "x", "per_s": 1}]}}
    with pytest.raises(ConfigError, match=r"jobs.k\[0\]: needs `measured`"):
        load_throughput(table)
    table["jobs"]["k"][0].update(estimate="a guess", flops_per_unit=1e9)
    with pytest.raises(ConfigError, match="needs exactly one of"):
        load_throughput(table)
    shipped = yaml.safe_load((ROOT / "config" / "throughput.yaml").read_text())
    assert load_throughput(shipped).default_device == "A100"


def test_help() -> None:
    result = plan("--help")
    assert "--budget-gpus" in result.stdout and "--profile" in result.stdout
