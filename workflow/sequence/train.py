"""``sequence_train``: an expression model as a LightningModule on the shared scaffold.

Adam(W) with a Noam-style schedule (linear warm-up, then 1/sqrt decay, as the Perceiver paper;
the peak is ``lr``). The warm-up is ``warmup_steps``, or ``warmup_fraction`` of the run's
optimiser steps (workflow/common/schedule.py), so that it ends well before the run does.
Validation logs ``val_loss`` and ``val_r2`` (squared Pearson, the track's metric); the
checkpoint is selected on ``val_r2``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import PearsonCorrCoef

from workflow.common.errors import InputError
from workflow.common.schedule import warmup_steps
from workflow.common.target import RunTarget
from workflow.common.training import (
    fit_and_publish,
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
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"])
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = warmup_steps(s, total)
        log.info("learning rate: warm-up %d of %d optimiser steps, then 1/sqrt decay",
                 warmup, total)  # fmt: skip
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, noam(warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


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
    (0..K-1), recorded as ``fold`` in the checkpoint's settings for the evaluation."""
    seed, num_workers = target.seed, int(settings.get("num_workers", 0))
    window = list(settings.get("window") or [])
    settings = {**settings, "fold": run_fold(settings, seed)}
    data = GeneDataModule(
        folder, settings["task"], window, int(settings["batch_size"]), num_workers,
        settings.get("folds"), settings["fold"] or 0,
    )  # fmt: skip
    data.setup()
    length, protein_length = shapes(folder, window)
    L.seed_everything(seed, workers=True, verbose=False)  # the initial weights depend on it
    module = SequenceModule(settings, length, protein_length)
    log.info(
        "%s on task %s%s: %d train / %d val genes, window %s, %d parameters",
        settings["model"], settings["task"],
        "" if settings["fold"] is None else f" (fold {seed} of {settings['folds']})",
        len(data.datasets["train"]),
        len(data.datasets["val"]), window or "all", sum(p.numel() for p in module.parameters()),
    )  # fmt: skip
    run = train_settings(
        settings, target, inputs=[folder], trainer_overrides=trainer_overrides,
        monitor="val_r2", mode="max",
    )  # fmt: skip
    return fit_and_publish(module, data, run, target.final, {"monitor": "val_r2"})
