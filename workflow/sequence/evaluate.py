"""``sequence_evaluate``: test-split predictions of one trained run (its held-out fold for a
cross-validation run)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from workflow.sequence.data import gene_sets
from workflow.sequence.train import load_module


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
