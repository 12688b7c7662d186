"""The one training scaffold: every track hands a LightningModule and a LightningDataModule
to :func:`fit`; nobody writes a training loop.

Checkpoints live in an *undeclared* run folder (``run_dir/checkpoints``): Snakemake deletes a
job's declared outputs before a rerun, so keeping ``last.ckpt`` outside them is what lets a
killed or timed-out job resume instead of starting over.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from workflow.common.atomic import atomic_path
from workflow.common.checkpoint import load_checkpoint
from workflow.common.config import config_hash
from workflow.common.errors import InputError

log = logging.getLogger("lsai.training")


@dataclass
class TrainSettings:
    """What a training rule decides; hardware numbers come from the rule's resources."""

    run_dir: Path
    max_epochs: int
    seed: int = 0
    gpus: int = 0
    num_nodes: int = 1
    monitor: str = "val_loss"
    mode: str = "min"
    precision: str | None = None
    log_every_n_steps: int = 10
    progress_refresh: int = 10
    trainer_overrides: dict[str, Any] = field(default_factory=dict)
    key: str | None = None  # run_key(...): a last.ckpt written under another key is not resumed

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.run_dir) / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.ckpt"

    @property
    def history_file(self) -> Path:
        return Path(self.run_dir) / "history.jsonl"


#: Settings an attempt may change and still continue the run: more epochs, other hardware.
UNKEYED = frozenset({"max_epochs", "seeds", "enabled", "resources", "num_workers"})


def run_key(
    settings: Mapping[str, Any], inputs: Iterable[str | os.PathLike[str]] = (), **data: Any
) -> str:
    """What a run's checkpoints depend on: its settings (but ``UNKEYED``), its input files
    (size and modification time; a folder: every file in it) and any other ``data``. A
    checkpoint left by a run with other settings or inputs is then never resumed."""
    files = []
    for path in map(Path, inputs):
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            try:
                info = file.stat()
            except OSError:
                files.append([str(file), None])  # reported by the loader that reads it
                continue
            if not file.is_dir():
                files.append([str(file), info.st_size, info.st_mtime_ns])
    kept = {k: v for k, v in settings.items() if k not in UNKEYED}
    return config_hash({"settings": kept, "inputs": files, **data})


class RunKey(Callback):
    """Writes the run's key into every checkpoint, where :func:`resumable` reads it."""

    def __init__(self, key: str | None) -> None:
        self.key = key

    def on_save_checkpoint(
        self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.key is not None:
            checkpoint["run_key"] = self.key


def resumable(settings: TrainSettings) -> dict[str, Any] | None:
    """The ``last.ckpt`` this run may resume from: there, and written under the same key
    (every rank decides alike, from the file). A stale one stays until overwritten."""
    path = settings.last_checkpoint
    if not path.exists():
        return None
    checkpoint = load_checkpoint(path)
    if settings.key is not None and checkpoint.get("run_key") != settings.key:
        log.warning(
            "%s was written by a run with other settings or inputs (key %s, now %s): "
            "not resumed, training from the start",
            path, checkpoint.get("run_key"), settings.key,
        )  # fmt: skip
        return None
    return checkpoint


@dataclass
class FitResult:
    best_checkpoint: Path
    resumed_from_epoch: int | None
    world_size: int
    is_global_zero: bool
    wall_time_s: float


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
    """``last.ckpt`` after every epoch, then a line in ``history.jsonl`` (pid, epoch).

    Lightning's ``save_last`` only writes when a top-k checkpoint is written (the monitored
    metric improved), so a kill could lose several epochs; this one never skips. The history
    line is written after the save, so it lists exactly the epochs a resume will not redo.
    """

    def __init__(self, dirpath: Path, history_file: Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.history_file = history_file

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, module)
        if trainer.is_global_zero and not trainer.sanity_checking:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.history_file, "a") as fh:
                record = {
                    "pid": os.getpid(),
                    "epoch": trainer.current_epoch,
                    **epoch_metrics(trainer),
                }
                fh.write(json.dumps(record) + "\n")


def epoch_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def hardware(settings: TrainSettings) -> dict[str, Any]:
    """Trainer hardware arguments from the rule's GPU count and what the machine has.

    ``gpus`` > 0 without CUDA (a laptop, a test cluster with fake GPUs) runs that many CPU
    processes instead, so DDP wiring is still exercised (gloo).
    """
    devices = max(settings.gpus, 1)
    cuda = torch.cuda.is_available()
    if settings.gpus > 0 and not cuda:
        warnings.warn(
            f"{settings.gpus} GPU(s) requested but CUDA is not available: running on CPU",
            stacklevel=2,
        )
    distributed = devices * settings.num_nodes > 1
    return {
        "accelerator": "gpu" if cuda and settings.gpus > 0 else "cpu",
        "devices": devices,
        "num_nodes": settings.num_nodes,
        "strategy": "ddp" if distributed else "auto",
        "precision": settings.precision
        or ("bf16-mixed" if cuda and settings.gpus > 0 else "32-true"),
    }


def build_trainer(settings: TrainSettings) -> L.Trainer:
    best = ModelCheckpoint(
        dirpath=settings.checkpoint_dir,
        filename="best",
        monitor=settings.monitor,
        mode=settings.mode,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    last = LastCheckpoint(settings.checkpoint_dir, settings.history_file)
    loggers = [
        CSVLogger(Path(settings.run_dir) / "logs", name="csv"),
        TensorBoardLogger(Path(settings.run_dir) / "logs", name="tensorboard"),
    ]
    kwargs: dict[str, Any] = {
        **hardware(settings),
        "max_epochs": settings.max_epochs,
        "callbacks": [
            best,
            last,
            EpochLog(),
            RunKey(settings.key),
            TQDMProgressBar(refresh_rate=settings.progress_refresh),
        ],
        "logger": loggers,
        "plugins": [AtomicCheckpointIO()],
        "log_every_n_steps": settings.log_every_n_steps,
        "default_root_dir": settings.run_dir,
        **settings.trainer_overrides,
    }
    return L.Trainer(**kwargs)


def fit(
    module: L.LightningModule, datamodule: L.LightningDataModule, settings: TrainSettings
) -> FitResult:
    """Train, resuming from ``last.ckpt`` when an earlier attempt left one."""
    started = time.monotonic()
    L.seed_everything(settings.seed, workers=True, verbose=False)
    trainer = build_trainer(settings)
    previous = resumable(settings)
    resume, resumed_from = None, None
    if previous is not None:
        resume, resumed_from = settings.last_checkpoint, int(previous["epoch"])
        log.info("resuming from %s (epoch %d done)", resume, resumed_from + 1)
    elif settings.history_file.exists() and trainer.is_global_zero:
        settings.history_file.replace(settings.history_file.with_suffix(".stale.jsonl"))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    best = (
        Path(monitored[0].best_model_path) if monitored and monitored[0].best_model_path else None
    )
    if best is None or not best.exists():
        best = settings.last_checkpoint
    return FitResult(
        best, resumed_from, trainer.world_size, trainer.is_global_zero, time.monotonic() - started
    )


def publish_checkpoint(source: Path, final: Path, run_info: dict[str, Any]) -> None:
    """Copy the selected checkpoint to the rule's declared output, atomically, with how it
    was trained (world size, wall time, resume) under ``run_info`` for the evaluation."""
    checkpoint = load_checkpoint(source)
    checkpoint["run_info"] = run_info
    with atomic_path(final) as tmp:
        torch.save(checkpoint, tmp)


def read_checkpoint(path: str | os.PathLike[str], kind: str = "checkpoint") -> dict[str, Any]:
    """A saved checkpoint's dict on the CPU, for every track's loaders (the one safe path:
    :func:`workflow.common.checkpoint.load_checkpoint`)."""
    return load_checkpoint(path, kind)


def checkpoint_run_info(path: str | Path) -> dict[str, Any]:
    """The ``run_info`` that :func:`publish_checkpoint` stored in a published checkpoint."""
    info = read_checkpoint(path).get("run_info", {})
    if not isinstance(info, dict):
        raise InputError(path, "run_info of the checkpoint is not a mapping")
    return info


def publish_run(result: FitResult, final: Path, seed: int, **extra: Any) -> None:
    """:func:`publish_checkpoint` of a fit's selected checkpoint with the fit's run info."""
    publish_checkpoint(
        result.best_checkpoint,
        final,
        {
            "world_size": result.world_size,
            "train_wall_time_s": round(result.wall_time_s, 2),
            "resumed_from_epoch": result.resumed_from_epoch,
            "seed": seed,
            **extra,
        },
    )
