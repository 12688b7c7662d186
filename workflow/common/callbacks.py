"""The Lightning callbacks of the training scaffold (workflow.common.training): the resume
state each checkpoint carries (RNG states, data position), ``last.ckpt`` written inside an
epoch by steps and by time, one JSON line per epoch, and atomic checkpoint files."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from workflow.common.atomic import atomic_path
from workflow.common.checkpoint import load_checkpoint

log = logging.getLogger("lsai.training")


class RunState(Callback):
    """What a checkpoint carries beyond Lightning's own state: the run's key (read by
    :func:`resumable`), where in the run it was taken, and every rank's RNG states (torch,
    CUDA, numpy, random), restored on resume so augmentations continue their streams.

    The one batch the loader had prefetched before the save is drawn again after a resume
    with the RNG of the resumed process, so it is the same sample but not necessarily the
    same augmentation."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.mid_epoch = False  # set by LastCheckpoint around a save inside an epoch

    def on_save_checkpoint(
        self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.key is not None:
            checkpoint["run_key"] = self.key
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        checkpoint["position"] = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            # a step save, or the end of a run cut by max_steps inside an epoch
            "mid_epoch": self.mid_epoch or done < trainer.num_training_batches,
        }
        checkpoint["rng_states"] = gather_objects(rng_states())

    def on_load_checkpoint(
        self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("rng_states")
        if isinstance(states, list) and len(states) == trainer.world_size:
            set_rng_states(states[trainer.global_rank])
        elif states is not None:
            ranks = len(states) if isinstance(states, list) else "?"
            log.warning("RNG states of %s rank(s), now %d: not restored", ranks, trainer.world_size)


def rng_states() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (what the safe loader reads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, python_gauss = states["python"]
    random.setstate((version, tuple(internal), python_gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a checkpoint is written by rank 0 alone)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a SIGKILL during a save never
    leaves a truncated ``last.ckpt`` that the next attempt would fail to resume from. A resume
    reads them back through :func:`load_checkpoint`: tensors and plain values, never code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None):
        return load_checkpoint(path)


class EpochLog(Callback):
    """One log line per epoch with its metrics and duration."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info(
                "epoch %d/%d done in %.1f s: %s",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                time.monotonic() - self.started,
                " ".join(f"{k}={v:.4g}" for k, v in sorted(epoch_metrics(trainer).items())),
            )


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch, then a line in ``history.jsonl`` (pid, epoch); and
    inside an epoch every ``every_steps`` steps or ``every_minutes`` (no history line).

    Lightning's ``save_last`` only writes when a top-k checkpoint is written (the monitored
    metric improved), so a kill could lose several epochs; this one never skips. The history
    line is written after the save, so it lists exactly the epochs a resume will not redo.
    Lightning's own ``every_n_train_steps`` and ``train_time_interval`` exclude each other and
    replace the epoch-end save; here all three apply. Whether the time is up is rank 0's
    decision, broadcast, so that every rank joins the same save.
    """

    def __init__(
        self,
        dirpath: Path,
        history_file: Path,
        state: RunState,
        every_steps: int | None = None,
        every_minutes: float | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.history_file = history_file
        self.state = state
        self.every_steps = int(every_steps) if every_steps else None
        self.every_seconds = float(every_minutes) * 60 if every_minutes else None
        self._saved_step, self._saved_at = 0, time.monotonic()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_start(trainer, module)
        self._saved_step, self._saved_at = trainer.global_step, time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        super().on_train_batch_end(trainer, module, outputs, batch, idx)
        if trainer.sanity_checking or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch-end save follows
        step = trainer.global_step
        due = bool(self.every_steps) and step - self._saved_step >= self.every_steps
        if self.every_seconds is not None and not due:
            late = time.monotonic() - self._saved_at >= self.every_seconds
            due = bool(trainer.strategy.broadcast(late, src=0))
        if due and step > self._saved_step:
            self.state.mid_epoch = True
            try:
                trainer.save_checkpoint(Path(self.dirpath) / "last.ckpt")
            finally:
                self.state.mid_epoch = False
            self._saved_step, self._saved_at = step, time.monotonic()
            if trainer.is_global_zero:
                epoch = trainer.current_epoch + 1
                log.info("checkpoint at step %d (inside epoch %d) -> %s", step, epoch, self.dirpath)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, module)
        self._saved_step, self._saved_at = trainer.global_step, time.monotonic()
        if trainer.is_global_zero and not trainer.sanity_checking:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.history_file, "a") as fh:
                record = {
                    "pid": os.getpid(),
                    "epoch": trainer.current_epoch,
                    "step": trainer.global_step,
                    **epoch_metrics(trainer),
                }
                fh.write(json.dumps(record) + "\n")


def epoch_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
