"""The one training scaffold: every track hands a LightningModule and a LightningDataModule
to :func:`fit`; nobody writes a training loop.

Checkpoints live in an *undeclared* run folder (``run_dir/checkpoints``): Snakemake deletes a
job's declared outputs before a rerun, so keeping ``last.ckpt`` outside them is what lets a
killed or timed-out job resume instead of starting over.

``last.ckpt`` is written at every epoch end and also inside an epoch, every
``checkpoint_every_steps`` optimiser steps and every ``checkpoint_every_minutes`` (the rules
default the latter below the job's runtime limit:
:func:`workflow.common.resources.checkpoint_minutes`), so an epoch
longer than a job (FLIP's one pass over LAION-400M) still finishes over several attempts. A
resume restores the weights, optimiser, scheduler, step counter, RNG states and the data
position: map-style tracks use :func:`workflow.common.loaders.train_loader` (exact to the
sample), streams keep their own position in their DataModule's state (FLIP: to the shard).
A run may be cut by a budget instead of epochs: ``max_steps`` or ``max_samples``. The
callbacks that do this live in workflow.common.callbacks.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from workflow.common.atomic import atomic_path
from workflow.common.callbacks import (
    AtomicCheckpointIO,
    EpochLog,
    LastCheckpoint,
    RunState,
)
from workflow.common.checkpoint import load_checkpoint
from workflow.common.config import config_hash
from workflow.common.errors import InputError
from workflow.common.target import RunTarget

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
    max_steps: int | None = None  # optimiser steps of the whole run: a budget instead of epochs
    max_samples: int | None = None  # training samples over all ranks: steps = / global batch
    batch_size: int | None = None  # per rank and step: what max_samples is divided by
    checkpoint_every_steps: int | None = None  # last.ckpt inside an epoch, by steps
    checkpoint_every_minutes: float | None = None  # ... and by time (whichever comes first)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.run_dir) / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.ckpt"

    @property
    def history_file(self) -> Path:
        return Path(self.run_dir) / "history.jsonl"


#: Settings an attempt may change and still continue the run: a longer budget, other
#: hardware, another checkpoint cadence.
UNKEYED = frozenset({
    "max_epochs", "max_steps", "max_samples", "epoch_fraction", "seeds", "enabled", "resources",
    "num_workers", "checkpoint_every_steps", "checkpoint_every_minutes",
})  # fmt: skip
#: The track settings that :func:`budget` hands to :class:`TrainSettings`.
BUDGET_KEYS = (
    "max_steps", "max_samples", "batch_size", "checkpoint_every_steps", "checkpoint_every_minutes"
)  # fmt: skip


def budget(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A track's ``train`` settings' budget and checkpoint cadence, as TrainSettings fields."""
    return {k: settings[k] for k in BUDGET_KEYS if settings.get(k) is not None}


def step_budget(settings: TrainSettings, world_size: int) -> int | None:
    """The run's optimiser-step budget: ``max_steps``, or ``max_samples`` over the global
    batch (rounded up), whichever is smaller; None without either."""
    budgets = []
    if settings.max_steps is not None:
        budgets.append(int(settings.max_steps))
    if settings.max_samples is not None:
        if not settings.batch_size:
            raise ValueError("max_samples needs the per-rank batch_size")
        accumulate = int(settings.trainer_overrides.get("accumulate_grad_batches", 1))
        per_step = int(settings.batch_size) * world_size * accumulate
        budgets.append(max(-(-int(settings.max_samples) // per_step), 1))
    return min(budgets) if budgets else None


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
    resumed_from_epoch: int | None  # the last epoch done before the resume
    world_size: int
    is_global_zero: bool
    wall_time_s: float
    resumed_from_step: int | None = None
    best_score: float | None = None  # the monitored metric at best_checkpoint


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
    state = RunState(settings.key)
    last = LastCheckpoint(
        Path(settings.checkpoint_dir), settings.history_file, state,
        settings.checkpoint_every_steps, settings.checkpoint_every_minutes,
    )  # fmt: skip
    hw = hardware(settings)
    steps = step_budget(settings, hw["devices"] * hw["num_nodes"])
    loggers = [
        CSVLogger(Path(settings.run_dir) / "logs", name="csv"),
        TensorBoardLogger(Path(settings.run_dir) / "logs", name="tensorboard"),
    ]
    kwargs: dict[str, Any] = {
        **hw,
        "max_epochs": settings.max_epochs,
        "max_steps": -1 if steps is None else steps,
        "callbacks": [
            best,
            last,
            EpochLog(),
            state,
            TQDMProgressBar(refresh_rate=settings.progress_refresh),
        ],
        "logger": loggers,
        "plugins": [AtomicCheckpointIO()],
        "log_every_n_steps": settings.log_every_n_steps,
        "default_root_dir": settings.run_dir,
        **settings.trainer_overrides,
    }
    one_lightning_log()
    return L.Trainer(**kwargs)


class _NoAdvert(logging.Filter):
    """Lightning's tips that advertise its cloud services say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud" not in record.getMessage()


def one_lightning_log() -> None:
    """Lightning's lines once, in the rule log's format: ``import lightning`` gives its loggers
    handlers of their own that also propagate to ours, so every line was printed twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        own = logging.getLogger(name)
        for handler in list(own.handlers):
            own.removeHandler(handler)
        own.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvert) for f in logger.filters):
            logger.addFilter(_NoAdvert())


def fit(
    module: L.LightningModule, datamodule: L.LightningDataModule, settings: TrainSettings
) -> FitResult:
    """Train, resuming from ``last.ckpt`` when an earlier attempt left one."""
    started = time.monotonic()
    L.seed_everything(settings.seed, workers=True, verbose=False)
    trainer = build_trainer(settings)
    previous = resumable(settings)
    resume, resumed_from, resumed_step = None, None, None
    if previous is not None:
        resume, resumed_step = settings.last_checkpoint, int(previous.get("global_step", 0))
        position = previous.get("position") or {}
        done = int(previous["epoch"]) - (1 if position.get("mid_epoch") else 0)
        resumed_from = done if done >= 0 else None
        mid = bool(position.get("mid_epoch"))
        where = f"inside epoch {done + 2}" if mid else f"epoch {done + 1} done"
        log.info("resuming from %s (step %d, %s)", resume, resumed_step, where)
    elif settings.history_file.exists() and trainer.is_global_zero:
        settings.history_file.replace(settings.history_file.with_suffix(".stale.jsonl"))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    best = (
        Path(monitored[0].best_model_path) if monitored and monitored[0].best_model_path else None
    )
    score = monitored[0].best_model_score if monitored else None
    if best is None or not best.exists():
        best, score = settings.last_checkpoint, None
    return FitResult(
        best, resumed_from, trainer.world_size, trainer.is_global_zero,
        time.monotonic() - started, resumed_step, None if score is None else float(score),
    )  # fmt: skip


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
            "resumed_from_step": result.resumed_from_step,
            "seed": seed,
            **extra,
        },
    )


def train_settings(
    settings: Mapping[str, Any],
    target: RunTarget,
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    key_data: Mapping[str, Any] | None = None,
    trainer_overrides: Mapping[str, Any] | None = None,
    **fields: Any,
) -> TrainSettings:
    """One run's :class:`TrainSettings` from a track's ``train`` settings and its target:
    epochs, precision, budget and checkpoint cadence, the target's folder, seed and DDP
    layout, and the resume key of its settings and ``inputs``. ``fields`` are the rest
    (monitor, mode...) and win over all of these."""
    derived: dict[str, Any] = {
        "gpus": target.gpus,
        "num_nodes": target.num_nodes,
        "max_epochs": int(settings["max_epochs"]),
        "precision": settings.get("precision"),
        **budget(settings),
    }
    return TrainSettings(
        run_dir=target.run_dir,
        seed=target.seed,
        trainer_overrides=dict(trainer_overrides or {}),
        key=run_key(settings, inputs, **dict(key_data or {})),
        **{**derived, **fields},
    )


def fit_and_publish(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    run: TrainSettings,
    final: str | os.PathLike[str] | None,
    run_info: Mapping[str, Any] | Callable[[FitResult], Mapping[str, Any]] | None = None,
    last: bool = False,
) -> FitResult:
    """Every track's recipe after the module is built: :func:`fit`, then on rank 0 publish
    the selected checkpoint (``last``: the last one, not the monitored best) to ``final``
    with the fit's run info and ``run_info`` (a callable is given the fit's result, for what
    is measured on the selected checkpoint)."""
    result = fit(module, datamodule, run)
    if final is None or not result.is_global_zero:
        return result
    if last:
        result.best_checkpoint = run.last_checkpoint
    extra = run_info(result) if callable(run_info) else run_info
    publish_run(result, Path(final), run.seed, **dict(extra or {}))
    log.info("selected %s (%s) -> %s", result.best_checkpoint.name,
             "last" if last else f"best {run.monitor}", final)  # fmt: skip
    return result
