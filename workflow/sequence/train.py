"""``sequence_train``: an expression model as a LightningModule on the shared scaffold.

Adam or AdamW with a Noam-style schedule (linear warm-up, then 1/sqrt decay, as the Perceiver
paper; the peak is ``lr``) or a constant rate (Xpresso), and optional early stopping on
``val_r2`` (``patience`` epochs). The warm-up is ``warmup_steps``, or ``warmup_fraction`` of
the run's optimiser steps (workflow/common/schedule.py), so that it ends well before the run
does.
Validation logs ``val_loss`` and ``val_r2`` (squared Pearson, the track's metric); the
checkpoint is selected on ``val_r2``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torchmetrics import PearsonCorrCoef

from workflow.common.errors import InputError
from workflow.common.schedule import warmup_steps
from workflow.common.target import RunTarget
from workflow.common.training import (
    fit,
    publish_run,
    read_checkpoint,
    train_settings,
)
from workflow.sequence.data import GeneDataModule, split_file
from workflow.sequence.models import DEFAULTS, build_model

log = logging.getLogger("lsai.sequence.train")


def shapes(folder: str | PathLike[str], window: list[int] | None) -> tuple[int, int]:
    """Model window length and stored protein length of an encoded folder."""
    path = split_file(folder, "train")
    try:
        with h5py.File(path, "r") as h5:
            length = int(h5["promoter"].shape[1]) if "promoter" in h5 else 0
            protein = int(h5["protein"].shape[1]) if "protein" in h5 else 0
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file: {err}") from None
    start, end = window if window else (0, length)
    return int(end) - int(start), protein


class SequenceModule(L.LightningModule):
    def __init__(self, settings: Mapping[str, Any], window: int, protein_length: int) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"settings": dict(settings), "window": window, "protein_length": protein_length}
        )
        self.settings = {**DEFAULTS, **dict(settings)}
        self.model = build_model(self.settings, window, protein_length)
        self.val_pearson = PearsonCorrCoef()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.settings["loss"] == "huber":
            return F.huber_loss(prediction, target, delta=float(self.settings["huber_delta"]))
        return F.mse_loss(prediction, target)

    def training_step(self, batch: Mapping[str, torch.Tensor], _: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["target"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["target"]))  # fmt: skip
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], _: int) -> torch.Tensor:
        prediction = self(batch)
        loss = self.loss(prediction, batch["target"])
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["target"]), sync_dist=True)  # fmt: skip
        self.val_pearson.update(prediction.float(), batch["target"].float())
        return loss

    def on_validation_epoch_end(self) -> None:
        r = self.val_pearson.compute()
        self.val_pearson.reset()
        self.log("val_r2", torch.nan_to_num(r) ** 2, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        s = self.settings
        kind = torch.optim.AdamW if s["optimizer"] == "adamw" else torch.optim.Adam
        optimizer = kind(
            self.parameters(), lr=float(s["lr"]), betas=tuple(s["betas"]),
            weight_decay=float(s["weight_decay"]),
        )  # fmt: skip
        if s["schedule"] == "constant":
            log.info("learning rate: %g throughout", float(s["lr"]))
            return {"optimizer": optimizer}
        total = int(self.trainer.estimated_stepping_batches)
        warmup = warmup_steps(s, total)
        log.info("learning rate: warm-up %d of %d optimiser steps, then 1/sqrt decay",
                 warmup, total)  # fmt: skip
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, noam(warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_callbacks(self) -> list[L.Callback]:
        """Early stopping on val_r2 when ``patience`` is set (its count is in the checkpoints,
        so a resumed run keeps it)."""
        patience = self.settings["patience"]
        if patience is None:
            return []
        return [EarlyStopping(monitor="val_r2", mode="max", patience=int(patience))]


def noam(warmup: int) -> Callable[[int], float]:
    """``LambdaLR`` factor: linear warm-up to 1 over ``warmup`` steps, then (warmup/step)^0.5
    (stepped per optimiser step)."""
    warmup = max(int(warmup), 1)

    def factor(step: int) -> float:
        step = step + 1
        return min(step / warmup, (warmup / step) ** 0.5)

    return factor


def run_fold(settings: Mapping[str, Any], seed: int) -> int | None:
    """The fold a cross-validation run holds out (its seed); None without ``folds``."""
    folds = settings.get("folds")
    if not folds:
        return None
    if not 0 <= seed < int(folds):
        raise InputError(
            "--seed", f"{seed} names no fold of a {folds}-fold experiment (0..{folds - 1})"
        )
    return seed


def load_module(checkpoint: str | PathLike[str]) -> SequenceModule:
    """A trained module from ``final.ckpt``, in eval mode."""
    state = read_checkpoint(checkpoint, "sequence model checkpoint")
    try:
        params = state["hyper_parameters"]
        module = SequenceModule(params["settings"], params["window"], params["protein_length"])
        module.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise InputError(checkpoint, f"not a sequence model checkpoint: {err}") from None
    return module.eval()


def train_experiment(
    settings: Mapping[str, Any],
    folder: Path,
    target: RunTarget,
    trainer_overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Fit one experiment x seed on the encoded ``folder``; publish the best-``val_r2``
    checkpoint to the target's ``final``. With ``folds`` K the seed names the held-out fold
    (0..K-1), recorded as ``fold`` in the checkpoint's settings for the evaluation. With
    ``trials`` N, N initialisations train one after the other (``run/trial<k>/``, each
    resumable) and the one with the best val_r2 is published, as Xpresso's authors kept the
    best of 10 trials of their model."""
    seed, num_workers = target.seed, int(settings.get("num_workers", 0))
    window = list(settings.get("window") or [])
    settings = {**settings, "fold": run_fold(settings, seed)}
    data = GeneDataModule(
        folder, settings["task"], window, int(settings["batch_size"]), num_workers,
        settings.get("folds"), settings["fold"] or 0,
    )  # fmt: skip
    data.setup()
    length, protein_length = shapes(folder, window)
    trials = int(settings.get("trials") or 1)
    results = []
    for trial in range(trials):
        # the initial weights depend on the seed; trial k > 0 draws its own
        L.seed_everything(seed + TRIAL_SEED_STEP * trial, workers=True, verbose=False)
        module = SequenceModule(settings, length, protein_length)
        log.info(
            "%s on task %s%s%s: %d train / %d val genes, window %s, %d parameters",
            settings["model"], settings["task"],
            "" if settings["fold"] is None else f" (fold {seed} of {settings['folds']})",
            "" if trials == 1 else f", trial {trial + 1} of {trials}",
            len(data.datasets["train"]), len(data.datasets["val"]), window or "all",
            sum(p.numel() for p in module.parameters()),
        )  # fmt: skip
        run_target = target if trials == 1 else trial_target(target, trial)
        run = train_settings(
            settings, run_target, inputs=[folder], trainer_overrides=trainer_overrides,
            monitor="val_r2", mode="max",
        )  # fmt: skip
        results.append(fit(module, data, run))
    scores = [r.best_score if r.best_score is not None else float("-inf") for r in results]
    best = max(range(trials), key=scores.__getitem__)
    result = results[best]
    if target.final is not None and result.is_global_zero:
        extra = {} if trials == 1 else {"trial": best, "trial_val_r2": scores}
        publish_run(result, Path(target.final), seed, monitor="val_r2", **extra)
        log.info("selected %s (best val_r2%s) -> %s", result.best_checkpoint, "" if trials == 1
                 else f" of trial {best + 1}; the trials' {scores}", target.final)  # fmt: skip
    return result


#: Trial k of a seed s initialises from seed s + k x this (trial 0 is the seed's own run).
TRIAL_SEED_STEP = 1_000_003


def trial_target(target: RunTarget, trial: int) -> RunTarget:
    """Trial ``trial``'s own run folder (checkpoints, history), publishing nothing itself."""
    return dataclasses.replace(target, run_dir=Path(target.run_dir) / f"trial{trial}", final=None)
