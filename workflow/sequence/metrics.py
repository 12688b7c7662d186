"""Regression metrics of the track: r^2 (squared Pearson, as Xpresso and the Perceiver paper
report it), Pearson, Spearman and MSE, on z-scored labels."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional import mean_squared_error, pearson_corrcoef, spearman_corrcoef

HIGHER_IS_BETTER = {"r2": True, "pearson": True, "spearman": True, "MSE": False}


def expression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    target = torch.tensor(np.asarray(labels, dtype=np.float64))
    preds = torch.tensor(np.asarray(predictions, dtype=np.float64))
    if target.numel() < 2 or target.shape != preds.shape:
        raise ValueError(f"need equal arrays of >= 2 genes, got {target.shape} and {preds.shape}")
    pearson = float(pearson_corrcoef(preds, target))
    return {
        "r2": pearson**2 if np.isfinite(pearson) else float("nan"),
        "pearson": pearson,
        "spearman": float(spearman_corrcoef(preds, target)),
        "MSE": float(mean_squared_error(preds, target)),
    }
