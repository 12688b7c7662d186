"""Slide-level classification metrics (torchmetrics): ACC, AUC, balanced accuracy, F1."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    binary_recall,
    binary_roc,
)

HIGHER_IS_BETTER = {"ACC": True, "AUC": True, "balanced_ACC": True, "F1": True}


def slide_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics of one run's test slides; AUC is NaN (null) when only one class is present."""
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    preds = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
    if target.numel() == 0 or target.shape != preds.shape:
        raise ValueError(f"need equal, non-empty arrays, got {target.shape} and {preds.shape}")
    both = bool(target.min() == 0 and target.max() == 1)
    sensitivity = binary_recall(preds, target, threshold)
    specificity = binary_recall(1 - preds, 1 - target, 1 - threshold)
    return {
        "ACC": float(binary_accuracy(preds, target, threshold)),
        "AUC": float(binary_auroc(preds, target)) if both else float("nan"),
        "balanced_ACC": float((sensitivity + specificity) / 2),
        "F1": float(binary_f1_score(preds, target, threshold)),
    }


def roc_curve(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = binary_roc(
        torch.as_tensor(np.asarray(probs), dtype=torch.float32),
        torch.as_tensor(np.asarray(labels), dtype=torch.long),
    )
    return fpr.numpy(), tpr.numpy()
