"""A training job killed with SIGKILL resumes from its last checkpoint when rerun."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT, history, kill_after_epochs
from workflow.common.target import RunTarget

SETTINGS = {
    "model": "disnet",
    "max_epochs": 300,
    "batch_size": 16,
    "lr": 0.003,
    "weight_decay": 0.0,
    "num_workers": 0,
}


def test_sigkill_then_rerun_resumes(prepared, tmp_path):
    run_dir, final = tmp_path / "run", tmp_path / "final.ckpt"
    cmd = [
        sys.executable,
        "scripts/distance.py",
        "train",
        "--settings",
        json.dumps(SETTINGS),
        "--train-store",
        str(prepared["train"]),
        "--val-store",
        str(prepared["val"]),
        "--run-dir",
        str(run_dir),
        "--out",
        str(final),
        "--seed",
        "0",
    ]
    first = kill_after_epochs(cmd, run_dir, 5)
    assert len(first) >= 5 and not final.exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stderr
    second = [h for h in history(run_dir) if h["pid"] != first[0]["pid"]]
    done_before = {h["epoch"] for h in first}
    done_after = [h["epoch"] for h in second]
    assert done_after, "the rerun trained no epoch"
    # resumed right after the last saved epoch: nothing finished before the kill is redone
    assert max(done_before) < min(done_after) <= max(done_before) + 2
    assert max(done_after) == SETTINGS["max_epochs"] - 1
    assert final.exists()


def test_a_checkpoint_resumes_only_the_run_that_wrote_it(prepared, tmp_path, caplog):
    """More epochs continue a run; other settings or other data start it again."""
    import shutil

    from workflow.common.config import stage_settings
    from workflow.distance.train import train_experiment

    run_dir, final = tmp_path / "run", tmp_path / "final.ckpt"
    settings = stage_settings({**SETTINGS, "max_epochs": 2}, "distance_train")

    def train(settings, train_store=prepared["train"]):
        caplog.clear()
        with caplog.at_level("INFO", logger="lsai.training"):
            train_experiment(settings, train_store, prepared["val"], RunTarget(run_dir, final))
        return caplog.text

    assert "resuming" not in train(settings)
    assert "resuming from" in train({**settings, "max_epochs": 3})
    assert [h["epoch"] for h in history(run_dir)] == [0, 1, 2]

    text = train({**settings, "max_epochs": 4, "lr": 0.01})
    assert "other settings or inputs" in text and "resuming" not in text
    assert [h["epoch"] for h in history(run_dir)] == [0, 1, 2, 3]  # all redone
    assert (run_dir / "history.stale.jsonl").exists()

    moved = tmp_path / "train.h5"
    shutil.copy(prepared["train"], moved)  # same content, another file: inputs changed
    text = train({**settings, "max_epochs": 4, "lr": 0.01}, moved)
    assert "other settings or inputs" in text and "resuming" not in text


def test_sigkill_inside_an_epoch_resumes_at_the_next_batch(prepared, tmp_path):
    """Killed between two step checkpoints of an epoch, the rerun continues the step counter
    and trains exactly the batches the uninterrupted run trains (the loader's position and
    its shuffling generator are in the checkpoint)."""
    from tests.resume_driver import ROOT as DRIVER_ROOT
    from tests.resume_driver import as_resumed, command, kill_inside_epoch, records
    from workflow.common.config import stage_settings

    settings = stage_settings(
        {**SETTINGS, "max_epochs": 3, "batch_size": 4, "checkpoint_every_steps": 2},
        "distance_train",
    )

    def kwargs(run_dir):
        return {"settings": settings, "train_store": str(prepared["train"]),
                "val_store": str(prepared["val"]), "run_dir": str(run_dir),
                "final": str(run_dir / "final.ckpt"), "seed": 0}  # fmt: skip

    whole = tmp_path / "whole.jsonl"
    done = subprocess.run(command("distance", whole, kwargs(tmp_path / "a")), cwd=DRIVER_ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reference = records(whole)
    steps = sum(r["epoch"] == 0 for r in reference)
    assert steps >= 6 and [r["step"] for r in reference] == list(range(3 * steps))
    assert len({r["batch"] for r in reference}) == len(reference)  # batches tell apart

    cut = tmp_path / "cut.jsonl"
    where = kill_inside_epoch("distance", cut, kwargs(tmp_path / "b"), steps + steps // 3)
    assert where["mid_epoch"] and where["epoch"] == 1
    again = subprocess.run(command("distance", cut, kwargs(tmp_path / "b")), cwd=DRIVER_ROOT,
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"step {where['step']}, inside epoch 2" in again.stderr
    resumed = as_resumed(cut, where["step"])
    assert [(r["step"], r["batch"]) for r in resumed] == [
        (r["step"], r["batch"]) for r in reference
    ]


def test_the_same_seed_trains_the_same_weights(prepared, tmp_path):
    """The initial weights are drawn after seeding: two runs of one seed end bit-identical
    (so a rerun reproduces the demo's numbers), and another seed starts elsewhere."""
    import torch

    from workflow.distance.train import train_experiment

    settings = {**SETTINGS, "max_epochs": 2}
    weights = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        final = tmp_path / name / "final.ckpt"
        train_experiment(
            settings,
            prepared["train"],
            prepared["val"],
            RunTarget(tmp_path / name / "run", final, seed),
        )
        weights[name] = torch.load(final, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])
