"""``sequence_evaluate``: test-split predictions of one trained run (its held-out fold for a
cross-validation run)."""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from workflow.common.metrics import RunEvaluation
from workflow.common.training import checkpoint_run_info
from workflow.sequence.data import gene_sets
from workflow.sequence.metrics import HIGHER_IS_BETTER, expression_metrics
from workflow.sequence.train import load_module

log = logging.getLogger("lsai.sequence.evaluate")


def evaluate_stage(evaluation: RunEvaluation, checkpoint: Path, folder: Path) -> dict:
    """The stage: every test gene's prediction of the run's task, the metrics of them, both
    published."""
    task = evaluation.settings["task"]
    predictions = predict_genes(checkpoint, folder)
    predictions["task"] = task
    metrics = expression_metrics(predictions["label"].to_numpy(), predictions["prediction"])
    evaluation.publish(
        metrics, HIGHER_IS_BETTER, checkpoint_run_info(checkpoint), predictions, task=task,
        test_genes=len(predictions),
    )  # fmt: skip
    log.info(
        "%s seed %d (%s): r2 %.3f, Spearman %.3f, MSE %.3f on %d test genes",
        evaluation.experiment, evaluation.seed, task, metrics["r2"], metrics["spearman"],
        metrics["MSE"], len(predictions),
    )  # fmt: skip
    return metrics


def predict_genes(
    checkpoint: str | PathLike[str], folder: str | PathLike[str], batch_size: int = 64
) -> pd.DataFrame:
    """Per test gene of the run's task: ``gene``, ``label`` (z-scored) and ``prediction``."""
    module = load_module(checkpoint)
    settings = module.settings
    split = gene_sets(
        Path(folder), settings["task"], list(settings.get("window") or []),
        settings.get("folds"), settings.get("fold") or 0, ("test",),
    )["test"]  # fmt: skip
    predictions = []
    with torch.inference_mode():
        for batch in DataLoader(split, batch_size=batch_size):
            predictions.append(module(batch).float())
    return pd.DataFrame(
        {
            "gene": split.gene_names(),
            "label": split.labels(),
            "prediction": torch.cat(predictions).numpy(),
        }
    )
