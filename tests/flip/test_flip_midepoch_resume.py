"""FLIP killed inside an epoch (SIGKILL) resumes there: the step counter continues, the
epoch's trained samples are the uninterrupted epoch's, none twice (to the sample: the
webdataset stream skips the shards and keys the checkpoint lists as trained)."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from tests.resume_driver import ROOT, as_resumed, command, kill_inside_epoch, records
from workflow.flip.filter import filter_shards
from workflow.flip.layout import list_shards

BATCH = 16
SETTINGS = {"model": "flip-tiny", "mask_ratio": 0.5, "batch_size": BATCH, "shuffle": 50,
            "lr": 2e-3, "warmup_steps": 5, "max_epochs": 2,
            "checkpoint_every_steps": 3}  # fmt: skip


@pytest.fixture(scope="module")
def shards(flip_demo, tmp_path_factory) -> list[str]:
    """Small shards (20 samples), so that an epoch spans many and a kill falls inside one."""
    out = tmp_path_factory.mktemp("flip_small_shards")
    filter_shards(list_shards(flip_demo / "shards"), out, {"shard_size": 20}, "skip")
    return [str(p) for p in list_shards(out)]


def run_kwargs(shards: list[str], run_dir) -> dict:
    return {"settings": SETTINGS, "shards": shards, "run_dir": str(run_dir),
            "final": str(run_dir / "final.ckpt"), "seed": 0}  # fmt: skip


def test_sigkill_inside_an_epoch_then_rerun_trains_the_same_samples(shards, tmp_path):
    n_train = 20 * (len(shards) - 1)  # the last shard is held out (val)
    steps = n_train // BATCH  # per epoch
    assert len(shards) >= 8 and steps >= 8

    whole = tmp_path / "whole.jsonl"
    done = subprocess.run(command("flip", whole, run_kwargs(shards, tmp_path / "a")), cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reference = records(whole)
    assert [r["step"] for r in reference] == list(range(2 * steps))

    cut = tmp_path / "cut.jsonl"
    kwargs = run_kwargs(shards, tmp_path / "b")
    where = kill_inside_epoch("flip", cut, kwargs, min_step=steps + steps // 3)
    assert where["epoch"] == 1 and steps < where["step"] < 2 * steps and where["mid_epoch"]
    again = subprocess.run(command("flip", cut, kwargs), cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"step {where['step']}, inside epoch 2" in again.stderr
    assert "resuming the epoch" in again.stderr

    resumed = as_resumed(cut, where["step"])
    # the step counter continues from the checkpoint: every step once, in order
    assert [r["step"] for r in resumed] == list(range(2 * steps))
    for epoch in range(2):
        ours = [k for r in resumed if r["epoch"] == epoch for k in r["keys"]]
        theirs = [k for r in reference if r["epoch"] == epoch for k in r["keys"]]
        assert len(ours) == len(theirs) == steps * BATCH
        assert max(Counter(ours).values()) == 1, f"epoch {epoch}: a sample trained twice"
        if epoch != 1:  # untouched epochs are the same stream
            assert ours == theirs
        else:  # other order; only the epoch's leftover (< one batch) may differ
            assert len(set(ours) ^ set(theirs)) <= 2 * (n_train - steps * BATCH)
