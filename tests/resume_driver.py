"""One training run with every trained batch written down, for the mid-epoch resume tests:
``python -m tests.resume_driver <track> <record.jsonl> <json kwargs>``.

Each trained batch adds a line {pid, step, epoch, ...}: for map-style tracks a digest of the
batch's tensors (their samples are not augmented, so equal samples give equal digests), for
FLIP the keys of its samples (its images are augmented). Steps are slowed a little so that a
test can kill the run between two checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from workflow.common import training
from workflow.common.target import RunTarget


def tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, dict):
        return [t for k in sorted(batch) for t in tensors(batch[k])]
    if isinstance(batch, list | tuple):
        return [t for item in batch for t in tensors(item)]
    return []


def main(track: str, record: Path, kwargs: dict[str, Any]) -> None:
    """``kwargs`` are train_experiment's, with the RunTarget's fields (run_dir, final, seed...)
    among them, as plain JSON."""
    fields = ("run_dir", "final", "seed", "gpus", "num_nodes")
    target = RunTarget(**{k: v for k, v in kwargs.items() if k in fields})
    kwargs = {k: v for k, v in kwargs.items() if k not in fields} | {"target": target}

    def write(trainer: Any, **entry: Any) -> None:
        line = {"pid": os.getpid(), "step": trainer.global_step,
                "epoch": trainer.current_epoch, **entry}  # fmt: skip
        with open(record, "a") as fh:
            fh.write(json.dumps(line) + "\n")
        time.sleep(float(os.environ.get("RESUME_TEST_STEP_DELAY", "0.05")))

    if track == "flip":
        from workflow.flip import data
        from workflow.flip.train import train_experiment

        note = data.ShardDataModule.note_trained

        def noted(self: Any, info: dict) -> None:
            note(self, info)
            write(self.trainer, keys=list(info["keys"]))

        data.ShardDataModule.note_trained = noted
        train_experiment(**kwargs)
    elif track == "distance":
        from workflow.distance.train import train_experiment

        class Recorder(training.EpochLog):
            def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int):
                digest = hashlib.sha256()
                for t in tensors(batch):
                    digest.update(t.detach().cpu().contiguous().numpy().tobytes())
                write(trainer, batch=digest.hexdigest()[:16])

        training.EpochLog = Recorder
        train_experiment(**kwargs)
    else:
        raise SystemExit(f"unknown track {track}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    main(sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]))


# The test side: run the driver, kill it inside an epoch, read what it recorded.

ROOT = Path(__file__).resolve().parents[1]


def command(track: str, record: Path, kwargs: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "tests.resume_driver", track, str(record), json.dumps(kwargs)]


def position(run_dir: Path) -> dict[str, Any] | None:
    """``position`` of the run's ``last.ckpt`` (None while there is none)."""
    from workflow.common.checkpoint import load_checkpoint

    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return load_checkpoint(path).get("position") if path.exists() else None


def kill_inside_epoch(
    track: str, record: Path, kwargs: dict[str, Any], min_step: int, timeout: float = 600
) -> dict[str, Any]:
    """Start a run, SIGKILL it once ``last.ckpt`` was written inside an epoch at step
    ``min_step`` or later; return that checkpoint's position (read after the kill)."""
    import signal
    import subprocess

    run_dir = Path(kwargs["run_dir"])
    log = open(record.with_suffix(".log"), "w")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(command(track, record, kwargs), cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline, seen = time.monotonic() + timeout, None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            path = run_dir / "checkpoints" / "last.ckpt"
            stamp = path.stat().st_mtime_ns if path.exists() else None
            if stamp is not None and stamp != seen:
                seen, where = stamp, position(run_dir)
                if where and where["mid_epoch"] and where["step"] >= min_step:
                    break
            time.sleep(0.02)
    finally:
        running = proc.poll() is None
        if running:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    tail = record.with_suffix(".log").read_text()[-3000:]
    assert running, f"the run ended (or timed out) before a checkpoint inside an epoch:\n{tail}"
    where = position(run_dir)
    assert where is not None
    return where


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def as_resumed(path: Path, checkpoint_step: int) -> list[dict[str, Any]]:
    """What an interrupted run trained for good: the first process's batches before the
    checkpoint it resumed from, then the resumed process's (later ones were redone)."""
    lines = records(path)
    first = lines[0]["pid"]
    kept = [r for r in lines if r["pid"] == first and r["step"] < checkpoint_step]
    return kept + [r for r in lines if r["pid"] != first]
