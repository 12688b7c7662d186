"""Training and evaluation through scripts/sequence.py: SIGKILL resume, metrics, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from tests.conftest import ROOT, history, kill_after_epochs
from tests.sequence.synthetic import encoded_fixture

SETTINGS = {
    "model": "perceiver_lsai", "task": "mrna", "max_epochs": 200, "batch_size": 32, "lr": 0.003,
    "warmup_steps": 20, "window": [], "dim": 16, "latents": 4, "self_layers": 0, "stem_pool": 4,
}  # fmt: skip


encoded = encoded_fixture((200, 60, 60))


def script(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts/sequence.py"), *args]


def test_sigkill_then_rerun_resumes_and_evaluates(encoded, tmp_path):
    run_dir, final = tmp_path / "run", tmp_path / "final.ckpt"
    cmd = script(
        "train", "--settings", json.dumps(SETTINGS), "--encoded", str(encoded),
        "--run-dir", str(run_dir), "--out", str(final), "--seed", "1",
    )  # fmt: skip
    first = kill_after_epochs(cmd, run_dir, 3)
    assert not final.exists()

    shorter = {**SETTINGS, "max_epochs": max(h["epoch"] for h in first) + 3}
    cmd[cmd.index("--settings") + 1] = json.dumps(shorter)
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stderr
    again = [h["epoch"] for h in history(run_dir) if h["pid"] != first[0]["pid"]]
    assert again and max(h["epoch"] for h in first) < min(again)  # nothing redone

    metrics, predictions = tmp_path / "metrics.json", tmp_path / "predictions.parquet"
    result = subprocess.run(
        script(
            "evaluate",
            "--checkpoint",
            str(final),
            "--encoded",
            str(encoded),
            "--metrics",
            str(metrics),
            "--predictions",
            str(predictions),
            "--dataset",
            "toy",
            "--experiment",
            "perceiver_mrna",
            "--seed",
            "1",
            "--settings",
            json.dumps(shorter),
        ),  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(metrics.read_text())
    assert set(record["metrics"]) == {"r2", "pearson", "spearman", "MSE"}
    assert record["extra"]["test_genes"] == 60 and record["extra"]["task"] == "mrna"
    table = pd.read_parquet(predictions)
    assert len(table) == 60 and set(table.columns) == {"gene", "label", "prediction", "task"}


def test_bad_training_input_is_one_clear_line(encoded, tmp_path):
    (tmp_path / "train.h5").write_bytes(b"\\x89HDF truncated")
    cases = [
        (tmp_path, {}, "train.h5: not a readable HDF5 file"),
        (encoded, {"window": [300, 600]}, "outside the stored promoters"),
    ]
    for folder, change, problem in cases:
        result = subprocess.run(
            script(
                "train",
                "--settings",
                json.dumps({**SETTINGS, **change}),
                "--encoded",
                str(folder),
                "--run-dir",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "x.ckpt"),
            ),  # fmt: skip
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and problem in result.stderr, result.stderr[-1500:]
        assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")
