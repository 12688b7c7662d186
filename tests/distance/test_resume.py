"""A training job killed with SIGKILL resumes from its last checkpoint when rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, history

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
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(history(run_dir)) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = history(run_dir)
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
