"""The capacity plan (workflow/common/capacity.py, scripts/capacity.py): the plan of
config/leonardo.yaml printed with its numbers checked by hand, a job over its runtime
flagged, a budget too small refused, and the scheduling arithmetic; the distance and wsi
sizes from prepared data, from the size hints, and unknown without either."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
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
from workflow.common.config import ConfigError, deep_merge, load_yaml, validate_config
from workflow.distance.sizes import capacity_jobs as distance_jobs
from workflow.distance.sizes import split_counts
from workflow.wsi.sizes import capacity_jobs as wsi_jobs

SCRIPT = ROOT / "scripts" / "capacity.py"
LEONARDO = ROOT / "config" / "leonardo.yaml"


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
                    "## Budget", "## Throughput used"):  # fmt: skip
        assert f"\n{heading}\n" in f"\n{text}"
    for track in ("distance", "wsi", "sequence", "flip", "watermark", "nerf"):
        assert f"\n| {track} | " in text
    # every distance and wsi GPU job estimated: 2 networks x 3 seeds; 2 feature jobs and
    # 2 datasets x 9 experiments x 3 seeds of training
    assert "\n| distance | 6 | 6 | " in text
    assert "\n| wsi | 56 | 56 | " in text
    # every GPU job of every track estimated (sequence's genome dataset from its hint)
    assert "## Not estimated" not in text
    assert {r["hours"] != "" for r in table.values() if r["track"] in ("distance", "wsi")} == {True}
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


def test_leonardo_distance_and_wsi_by_hand(leonardo) -> None:
    _, table = leonardo
    peak = 312e12 * 0.4  # the A100's bf16 peak at the table's utilisation
    # distance: 764 sequences split 0.71 / 0.04 / 0.25 - val round(30.56) = 31, test 191,
    # train 764 - 31 - 191 = 542; every 50th of 1,800 frames: 36 a sequence, 19,512 frames;
    # x 20 objects a frame (size hint) = 390,240 objects
    disnet = table["distance_train/motsynth/disnet/seed0"]
    # DisNet, batch 256, 100 epochs: 1,525 steps an epoch (the last partial), 39,024,000
    # objects at 50,000 a second + 60 s start-up
    assert int(disnet["work"]) == 100 * 390_240
    assert float(disnet["hours"]) == pytest.approx((39_024_000 / 50_000 + 60) / 3600, abs=1e-4)
    # Zhu & Fang, batch 4 (19,512 frames fill whole batches), 20 epochs: 390,240 frames at
    # 312e12 x 0.4 / 401.3e9 = 311.0 frames/s + 60 s
    zhu = table["distance_train/motsynth/zhu/seed0"]
    assert int(zhu["work"]) == 20 * 19_512
    assert float(zhu["hours"]) == pytest.approx(
        (390_240 / (peak / 401.3e9) + 60) / 3600, abs=1e-4
    )  # 0.365 h
    assert (zhu["class"], zhu["resumable"], zhu["verdict"]) == ("GPU_1", "yes", "ok")
    assert not any(r["experiment"] in ("mean", "pinhole") for r in table.values())  # CPU
    # wsi, CAMELYON16 (size hint): 243 + 27 + 130 = 400 slides x 7,675 tiles = 3,070,000
    # tiles at 1,000 a second + 60 s
    features = table["wsi_features/camelyon16"]
    assert int(features["work"]) == 400 * 7675
    assert float(features["hours"]) == pytest.approx((3_070_000 / 1000 + 60) / 3600, abs=1e-4)
    # DAS-MIL: one slide a step, 243 training slides x 200 epochs at 30 slides/s + 120 s
    dasmil = table["wsi_train/camelyon16/dasmil/seed0"]
    assert int(dasmil["work"]) == 243 * 200
    assert float(dasmil["hours"]) == pytest.approx((48_600 / 30 + 120) / 3600, abs=1e-4)
    # a baseline at 40 slides/s; TCGA-NSCLC: 737 training slides
    abmil = table["wsi_train/tcga_nsclc/abmil/seed0"]
    assert int(abmil["work"]) == 737 * 200
    assert float(abmil["hours"]) == pytest.approx((147_400 / 40 + 120) / 3600, abs=1e-4)


def leonardo_config() -> dict:
    """config/config.yaml with config/leonardo.yaml over it, as the workflow reads them."""
    return validate_config(
        deep_merge(load_yaml(ROOT / "config" / "config.yaml"), load_yaml(LEONARDO))
    )


def by_id(jobs: list[Job]) -> dict[str, Job]:
    return {job.id: job for job in jobs}


def test_prepared_data_are_counted_instead_of_the_hints(tmp_path: Path) -> None:
    config = leonardo_config()
    # distance: the index's train table - 6 objects in 3 frames of 2 sequences
    index = tmp_path / "results/distance/motsynth/prep/index/train.parquet"
    index.parent.mkdir(parents=True)
    pd.DataFrame(
        {"sequence": ["a", "a", "a", "a", "b", "b"], "frame": [50, 50, 100, 100, 50, 50]}
    ).to_parquet(index)
    jobs = by_id(distance_jobs(config, None, tmp_path))
    # DisNet: 6 objects a step (batch 256) x 100 epochs; Zhu & Fang: 3 frames x 20 epochs
    assert jobs["distance_train/motsynth/disnet/seed0"].work == 600
    assert jobs["distance_train/motsynth/zhu/seed0"].work == 60
    assert jobs["distance_train/motsynth/zhu/seed0"].note == str(index)
    # wsi, CAMELYON16: the tiling index - 2 train, 1 val, 1 test slide; 10 + 20 + 30 + 40 tiles
    tiles = tmp_path / "results/wsi/camelyon16/prep/tiles/index.tsv"
    tiles.parent.mkdir(parents=True)
    tiles.write_text(
        "slide_id\tlabel\tsplit\tn_x5\tn_x10\tn_x20\n"
        "s1\t0\ttrain\t1\t2\t7\ns2\t1\ttrain\t2\t3\t15\n"
        "s3\t0\tval\t5\t5\t20\ns4\t1\ttest\t4\t6\t30\n"
    )
    # TCGA-NSCLC: the labels rule's CSV - 3 train, 1 val, 2 test; tiles from the hint
    labels = tmp_path / "results/wsi/tcga_nsclc/labels/labels.csv"
    labels.parent.mkdir(parents=True)
    labels.write_text(
        "slide_id,label,split,path\n"
        + "".join(
            f"t{i},0,{s},x.svs\n" for i, s in enumerate("train train Train val test test".split())
        )
    )
    jobs = by_id(wsi_jobs(config, None, tmp_path))
    assert jobs["wsi_features/camelyon16"].work == 100
    assert jobs["wsi_train/camelyon16/dasmil/seed0"].work == 2 * 200
    assert jobs["wsi_train/camelyon16/dasmil/seed0"].after == ("wsi_features/camelyon16",)
    assert jobs["wsi_features/tcga_nsclc"].work == round(6 * 7675)
    assert jobs["wsi_train/tcga_nsclc/meanpool/seed0"].work == 3 * 200


def test_without_data_or_hint_the_size_is_unknown(tmp_path: Path) -> None:
    config = leonardo_config()
    del config["distance"]["datasets"]["motsynth"]["size_hint"]
    del config["wsi"]["datasets"]["camelyon16"]["size_hint"]
    jobs = by_id(distance_jobs(config, None, tmp_path) + wsi_jobs(config, None, tmp_path))
    disnet = jobs["distance_train/motsynth/disnet/seed0"]
    assert disnet.work is None and "no size_hint in distance.datasets.motsynth" in disnet.note
    assert jobs["wsi_features/camelyon16"].work is None
    assert jobs["wsi_train/camelyon16/dasmil/seed0"].work is None
    assert jobs["wsi_train/tcga_nsclc/dasmil/seed0"].work == 737 * 200  # its hint is kept


def test_demo_distance_sizes_by_hand() -> None:
    config = validate_config(load_yaml(ROOT / "config" / "config.yaml"))
    jobs = by_id(distance_jobs(config, None, ROOT / "no-such-folder"))
    # 24 sequences split 0.5 / 0.17 / 0.33: val round(4.08) = 4, test round(7.92) = 8,
    # train 12; stride 1: 10 frames each, 120 frames; 4-8 pedestrians: 6 a frame, 720 objects
    # DisNet (batch 64, 40 epochs): 40 x 720; Zhu & Fang (batch 8, 10 epochs): 10 x 120
    assert jobs["distance_train/demo/disnet/seed0"].work == 40 * 720
    assert jobs["distance_train/demo/zhu/seed0"].work == 10 * 120


@pytest.mark.parametrize("sequences", [3, 12, 40, 764])
def test_split_counts_match_the_index_stage(sequences: int) -> None:
    """workflow/distance/sizes.py repeats assign_splits' arithmetic (importing index.py would
    load pandas at parse time): both must give the same sequences per split."""
    from workflow.distance.index import assign_splits

    for fractions in ({"train": 0.71, "val": 0.04, "test": 0.25},
                      {"train": 0.5, "val": 0.17, "test": 0.33},
                      {"train": 0.8, "val": 0.0, "test": 0.2}):  # fmt: skip
        names = [f"seq{i:03d}" for i in range(sequences)]
        assigned = list(assign_splits(names, fractions, seed=0).values())
        want = {s: assigned.count(s) for s in ("train", "val", "test")}
        assert split_counts(sequences, fractions) == want


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
            "experiments": {"perceiver_mrna": {"model": "perceiver_lsai", "seeds": [0, 1]},
                            "xpresso_mrna": {"model": "xpresso", "seeds": [0], "max_epochs": 100,
                                             "resources": "GPU_NODE_DDP"},
                            "dnaperceiver_mrna": {"enabled": False}},  # the demo's, merged in
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
