"""Learning-rate schedules that fit the data (workflow/common/schedule.py): total steps and
warm-up by hand, the parse-time check on Leonardo's sequence config as it was and as fixed,
the sizes the tracks report, and the trainers' use of the resolved warm-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from tests.conftest import ROOT, copy_repo
from workflow.common.config import ConfigError, deep_merge, load_yaml, validate_config
from workflow.common.resources import class_spec, load_site
from workflow.common.schedule import (
    check_schedules,
    steps_per_epoch,
    total_steps,
    warmup_steps,
    world_size,
)
from workflow.flip.sizes import schedules as flip_schedules
from workflow.sequence import sizes as seq_sizes
from workflow.watermark.sizes import schedules as watermark_schedules

LEONARDO_SITE = ROOT / "profiles" / "leonardo" / "resources.yaml"


def config_with(overlay: dict) -> dict:
    """config/config.yaml with ``overlay`` merged over it, validated (defaults filled)."""
    return validate_config(deep_merge(load_yaml(ROOT / "config" / "config.yaml"), overlay))


def test_total_steps_and_warmup_by_hand() -> None:
    # 16,377 genes / 128 = 127.95 -> 128 steps an epoch (the last batch partial), 60 epochs
    assert steps_per_epoch(16377, 128) == 128
    assert total_steps(16377, 128, 60) == 7680
    # a loader that drops the partial batch: 1,000 // 64 = 15 steps an epoch
    assert steps_per_epoch(1000, 64, drop_last=True) == 15
    assert total_steps(1000, 64, 5, drop_last=True) == 75
    assert total_steps(1000, 64, 5) == 80
    # budgets cut the run: max_steps as given, max_samples over the global batch (rounded up)
    assert total_steps(16377, 128, 60, max_steps=5000) == 5000
    assert total_steps(16377, 128, 60, max_samples=100_000) == 782  # ceil(781.25)
    assert total_steps(16377, 128, 60, max_steps=700, max_samples=100_000) == 700
    assert total_steps(16377, 128, 60, max_steps=None, max_samples=None) == 7680
    # warm-up: steps unless a fraction is set; a fraction of the total, rounded, >= 1 step
    assert warmup_steps({"warmup_steps": 8000, "warmup_fraction": None}, 7680) == 8000
    assert warmup_steps({"warmup_steps": 8000, "warmup_fraction": 0.1}, 7680) == 768
    assert warmup_steps({"warmup_steps": 8000, "warmup_fraction": 0.05}, 75) == 4  # 3.75
    assert warmup_steps({"warmup_fraction": 0.001}, 100) == 1
    assert warmup_steps({"warmup_steps": 0}, 100) == 1


def test_world_size_from_the_resource_class() -> None:
    site = load_site([LEONARDO_SITE], environ={})
    assert world_size(class_spec("GPU_1", site)) == 1
    assert world_size(class_spec("GPU_NODE_DDP", site)) == 4
    assert world_size(class_spec("GPU_MULTINODE_DDP", site)) == 16
    assert world_size(class_spec("GPU_NODE_DDP", None)) == 1  # local: one process


#: Leonardo's sequence settings before the fix (config/leonardo.yaml: 60 epochs at batch 128
#: and the paper's 8,000 warm-up steps) on the published Xpresso split, whose files are not
#: here: its 16,377 training genes come from the dataset's hint.
LEONARDO_SEQUENCE_AS_IT_WAS = {
    "sequence": {
        "datasets": {
            "demo": {"enabled": False},
            "xpresso_human": {"xpresso": "/nonexistent/xpresso", "train_samples": 16377},
        },
        "train": {"max_epochs": 60, "batch_size": 128, "lr": 0.0005, "warmup_steps": 8000},
        "experiments": {
            "perceiver_mrna": {"model": "perceiver_lsai", "task": "mrna", "seeds": [0, 1, 2]},
            "xpresso_mrna": {"model": "xpresso", "task": "mrna", "max_epochs": 60},
        },
    }
}


def test_leonardo_sequence_warmup_as_it_was_is_refused(tmp_path: Path) -> None:
    config = config_with(LEONARDO_SEQUENCE_AS_IT_WAS)
    site = load_site([LEONARDO_SITE], environ={})
    schedules = seq_sizes.schedules(config, site, root=tmp_path)
    assert {(s.experiment, s.total, s.warmup) for s in schedules} >= {
        ("perceiver_mrna", 7680, 8000)
    }
    with pytest.raises(ConfigError) as err:
        check_schedules(schedules)
    message = str(err.value)
    assert "dataset 'xpresso_human', experiment 'perceiver_mrna'" in message
    assert "warmup_steps 8000 is not shorter than the run's 7680 optimiser steps" in message
    assert "16377 training samples, train_samples hint; global batch 128, 60 epochs" in message


def test_leonardo_sequence_warmup_fixed_is_accepted(tmp_path: Path) -> None:
    fixed = deep_merge(
        LEONARDO_SEQUENCE_AS_IT_WAS, {"sequence": {"train": {"warmup_fraction": 0.1}}}
    )
    config = config_with(fixed)
    schedules = seq_sizes.schedules(config, load_site([LEONARDO_SITE], environ={}), tmp_path)
    assert check_schedules(schedules) == []
    # (the demo's dnaperceiver_mrna merges in, at its batch of 50 and 6 epochs)
    assert {(s.total, s.warmup) for s in schedules} == {(7680, 768), (1968, 197)}
    # and an experiment may go back to steps that fit
    steps = deep_merge(
        fixed, {"sequence": {"experiments": {"xpresso_mrna": {"warmup_fraction": None,
                                                               "warmup_steps": 500}}}}
    )  # fmt: skip
    by_experiment = {s.experiment: s.warmup for s in seq_sizes.schedules(config_with(steps))}
    # (the demo's perceiver_mrna_softmax and dnaperceiver_mrna merge in, as with snakemake
    # --configfile)
    assert by_experiment == {
        "perceiver_mrna": 768, "perceiver_mrna_softmax": 768, "xpresso_mrna": 500,
        "dnaperceiver_mrna": 197,
    }  # fmt: skip


def test_the_shipped_configs_pass_the_check() -> None:
    """config/leonardo.yaml as fixed and the demo config: every track with a warm-up."""
    site = load_site([LEONARDO_SITE], environ={})
    leonardo = config_with(load_yaml(ROOT / "config" / "leonardo.yaml"))
    notes = check_schedules(seq_sizes.schedules(leonardo, site, "/nonexistent"))
    # the genome + tables dataset, before it is encoded, from its train_samples hint
    assert notes == []
    assert check_schedules(flip_schedules(leonardo, site, "/nonexistent")) == []
    assert watermark_schedules(leonardo, site) == []  # no demo LM is trained there
    demo = config_with({})
    for schedules in (
        seq_sizes.schedules(demo, None, "/nonexistent"),
        flip_schedules(demo, None, "/nonexistent"),
        watermark_schedules(demo),
    ):
        assert schedules and check_schedules(schedules) == []


def test_demo_sizes_by_hand() -> None:
    demo = config_with({})
    seq = {(s.experiment, s.phase): s for s in seq_sizes.schedules(demo, None, "/nonexistent")}
    # 3,000 genes less 200 val and 200 test; ceil(2600 / 32) = 82 steps x 10 epochs
    assert seq[("perceiver_mrna", "train")].size.samples == 2600
    assert seq[("perceiver_mrna", "train")].total == 820
    # protein, 3 folds: 0.9 x 3000 = 2700 pooled; 900 held out, 180 of the rest validate
    assert seq[("perceiver_protein", "train")].size.samples == 1620
    assert seq[("perceiver_protein", "train")].total == 51 * 6
    flip = {
        s.phase: s
        for s in flip_schedules(demo, None, "/nonexistent")
        if s.experiment == "flip_mask0"
    }
    # 5 shards x 240 less 10 planted reasons x 2 = 1,180 kept -> shards of 240: the last (220)
    # is held out; 960 // 64 = 15 steps an epoch, 6 epochs pre-training and 1 tuning
    assert flip["pretrain"].size.samples == 960
    assert (flip["pretrain"].total, flip["pretrain"].warmup) == (90, 20)
    assert (flip["tune"].total, flip["tune"].warmup) == (15, 5)
    (lm,) = watermark_schedules(demo)
    # 350 documents less round(0.05 x 350) = 18 held out; 332 x 330 tokens // 512 = 213 blocks
    assert lm.size.samples == 213
    assert (lm.total, lm.warmup) == (107 * 2, 30)


def test_flip_counts_the_filter_output(tmp_path: Path) -> None:
    demo = config_with({})
    folder = tmp_path / "results/flip/demo/filtered/group0"
    folder.mkdir(parents=True)
    (folder / "counts.json").write_text('{"kept": 1000, "samples": 1200}')
    (pretrain, *_) = flip_schedules(demo, None, tmp_path)
    # 1,000 kept in shards of 240: the last holds 1000 - 4 x 240 = 40 and is held out
    assert pretrain.size.samples == 960 and "filter counts" in pretrain.size.source


def write_split(path: Path, labels: list[float], protein: list[float] | None = None) -> None:
    with h5py.File(path, "w") as h5:
        h5["label"] = np.array(labels, dtype=np.float32)
        if protein is not None:
            h5["protein_label"] = np.array(protein, dtype=np.float32)


def test_sequence_counts_the_encoded_files(tmp_path: Path) -> None:
    overlay = {"sequence": {"datasets": {"demo": {"enabled": False},
                                         "real": {"xpresso": str(tmp_path / "none")}}}}  # fmt: skip
    encoded = tmp_path / seq_sizes.ENCODED.format(dataset="real")
    encoded.mkdir(parents=True)
    nan = float("nan")
    write_split(encoded / "train.h5", [0.1] * 300, [0.2] * 200 + [nan] * 100)
    track = config_with(overlay)["sequence"]
    size = seq_sizes.train_size(track, "real", {"task": "mrna"}, tmp_path)
    assert size.samples == 300 and str(encoded / "train.h5") in size.source
    assert seq_sizes.train_size(track, "real", {"task": "protein"}, tmp_path).samples == 200
    # a k-fold run pools the three files: valid.h5 and test.h5 are missing -> not counted
    unknown = seq_sizes.train_size(track, "real", {"task": "protein", "folds": 5}, tmp_path)
    assert unknown.samples is None
    write_split(encoded / "valid.h5", [0.1] * 50, [0.3] * 50)
    write_split(encoded / "test.h5", [0.1] * 50, [0.3] * 50)
    # pool 300 -> 60 held out -> 240, of which round(24) validate -> 216
    folds = seq_sizes.train_size(track, "real", {"task": "protein", "folds": 5}, tmp_path)
    assert folds.samples == 216


def test_flip_tuning_phase_as_the_trainer_builds_it() -> None:
    """Leonardo's tuning: a third of an epoch with its own warm-up, whatever pre-training's."""
    from workflow.flip.train import tune_settings

    overlay = {"flip": {"train": {"warmup_fraction": 0.05, "max_samples": 10**9}}}
    config = config_with(deep_merge(load_yaml(ROOT / "config" / "leonardo.yaml"), overlay))
    site = load_site([LEONARDO_SITE], environ={})
    by_phase = {s.phase: s for s in flip_schedules(config, site, "/nonexistent")
                if s.experiment == "flip_mask50"}  # fmt: skip
    tune = by_phase["tune"]
    keys = ("max_epochs", "max_steps", "max_samples", "epoch_fraction", "warmup_steps",
            "warmup_fraction", "mask_ratio", "batch_size", "resources")  # fmt: skip
    trainer = tune_settings(by_phase["pretrain"].settings, config["flip"]["tune"])
    assert {k: tune.settings.get(k) for k in keys} == {k: trainer.get(k) for k in keys}
    # 0.32 x 414,070,000 samples = 132,502,400 -> ceil(/ 1,024) = 129,397 steps; warm-up 200
    assert (tune.total, tune.warmup) == (129_397, 200)
    # pre-training: 404,365 steps, 5% warm-up; the 1e9-sample budget is above one epoch
    assert (by_phase["pretrain"].total, by_phase["pretrain"].warmup) == (404_365, 20_218)


def test_parse_time_constants_match_their_sources() -> None:
    from workflow.flip.demo import PLANTED
    from workflow.flip.sizes import NOT_INHERITED, PLANTED_REASONS
    from workflow.flip.train import NOT_INHERITED as TRAIN_NOT_INHERITED
    from workflow.sequence.data import CV_VAL_FRACTION, fold_indices

    assert PLANTED_REASONS == len(PLANTED)
    assert NOT_INHERITED == TRAIN_NOT_INHERITED
    assert seq_sizes.CV_VAL_FRACTION == CV_VAL_FRACTION
    for pool, folds in ((2700, 3), (1001, 5), (97, 10)):  # the smallest fold's training part
        assert seq_sizes.fold_train(pool, folds) == min(
            len(fold_indices(pool, folds, k)["train"]) for k in range(folds)
        )


def test_sequence_trainer_uses_the_resolved_warmup() -> None:
    import torch

    from workflow.sequence.train import SequenceModule, noam

    settings = {"model": "xpresso", "task": "mrna", "lr": 0.01, "warmup_steps": 8000,
                "warmup_fraction": 0.1, "xpresso_pools": [10, 4]}  # fmt: skip
    module = SequenceModule(settings, window=200, protein_length=0)
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)  # what fit() would say
    answer = module.configure_optimizers()
    optimizer, schedule = answer["optimizer"], answer["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # warm-up of 10 steps (0.1 x 100): linear to the peak at step 10, then (10 / step)^0.5
    assert rates[:10] == pytest.approx([0.01 * (s + 1) / 10 for s in range(10)])
    assert rates[9] == pytest.approx(0.01)
    assert rates[39] == pytest.approx(0.01 * (10 / 40) ** 0.5)
    assert noam(8000)(7679) == pytest.approx(0.96)  # the old Leonardo run's last step
    assert torch.isfinite(torch.tensor(rates)).all()


def test_workflow_refuses_a_warmup_longer_than_the_run(tmp_path: Path) -> None:
    """The rules' parse-time check: `error: ...`, non-zero exit, no job run."""
    workdir = copy_repo(tmp_path)
    (workdir / "bad.yaml").write_text(
        "sequence:\n  train:\n    max_epochs: 1\n    warmup_steps: 1000\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "1",
         "--configfile", "bad.yaml"],
        cwd=workdir, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "error: learning-rate warm-up longer than the run:" in result.stderr
    assert "experiment 'perceiver_mrna': warmup_steps 1000 is not shorter than the run's 82" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
