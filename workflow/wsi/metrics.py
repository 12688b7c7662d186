"""Slide-level classification metrics (torchmetrics): ACC, AUC, balanced accuracy, F1, and the
decision threshold that ACC, balanced accuracy and F1 use, chosen on the validation slides.

Threshold rule: the cut on the validation slides' probabilities that maximises Youden's
J = sensitivity + specificity - 1 (the same cut maximises balanced accuracy, (J + 1) / 2).
J does not depend on the class balance, so a cut chosen on a validation split with another
tumour fraction than the test split still holds; accuracy-optimal cuts do not. DSMIL's and
mil4wsi's code (``optimal_thresh``) take the same ROC point, max TPR - FPR, but on the test
slides themselves, which flatters ACC; here the test slides are never looked at. A slide is
positive when its probability is above the threshold (torchmetrics' rule).
"""

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

#: ``threshold`` is reported, not ranked: no direction (the report shows no arrow, no best).
HIGHER_IS_BETTER = {
    "ACC": True,
    "AUC": True,
    "balanced_ACC": True,
    "F1": True,
    "threshold": None,
    # lesion-level, where the dataset has lesion annotations (workflow/wsi/froc.py)
    "FROC": True,
    "tile_AUC": True,
}

#: Where the validation split cannot give a threshold (one class only): the uncalibrated cut.
FALLBACK_THRESHOLD = 0.5


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The cut maximising Youden's J on these (validation) slides, positive iff prob > cut.

    Candidates are the midpoints between consecutive distinct probabilities, so the cut
    never sits on a slide's own value; of equally good cuts the one nearest 0.5 wins (then
    the lower). ``ValueError`` when the slides hold one class or one distinct probability.
    """
    y = np.asarray(labels).astype(int).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape or not set(np.unique(y)) == {0, 1}:
        raise ValueError("need slides of both classes, one probability each")
    values = np.unique(p)
    if values.size < 2:
        raise ValueError("every slide has the same probability: no cut separates any")
    cuts = (values[:-1] + values[1:]) / 2
    positive = p[None, :] > cuts[:, None]
    sensitivity = positive[:, y == 1].mean(axis=1)
    specificity = (~positive[:, y == 0]).mean(axis=1)
    j = sensitivity + specificity - 1
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def slide_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Metrics of one run's test slides at ``threshold`` (the one chosen on validation, see
    :func:`youden_threshold`), which is reported too; AUC is NaN (null) with one class."""
    target = torch.tensor(np.asarray(labels), dtype=torch.long)  # a copy: parquet's are read-only
    preds = torch.tensor(np.asarray(probs), dtype=torch.float32)
    if target.numel() == 0 or target.shape != preds.shape:
        raise ValueError(f"need equal, non-empty arrays, got {target.shape} and {preds.shape}")
    hard = (preds > threshold).long()  # torchmetrics' rule, so every metric agrees on ties
    sensitivity = binary_recall(hard, target)
    specificity = binary_recall(1 - hard, 1 - target)
    return {
        "ACC": float(binary_accuracy(preds, target, threshold)),
        "AUC": slide_auc(labels, probs),
        "balanced_ACC": float((sensitivity + specificity) / 2),
        "F1": float(binary_f1_score(preds, target, threshold)),
        "threshold": float(threshold),
    }


def slide_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Slide-level AUROC; NaN when only one class is present (no ranking to judge)."""
    target = torch.tensor(np.asarray(labels), dtype=torch.long)
    if target.numel() == 0 or not bool(target.min() == 0 and target.max() == 1):
        return float("nan")
    return float(binary_auroc(torch.tensor(np.asarray(probs), dtype=torch.float32), target))


def roc_curve(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = binary_roc(
        torch.as_tensor(np.asarray(probs), dtype=torch.float32),
        torch.as_tensor(np.asarray(labels), dtype=torch.long),
    )
    return fpr.numpy(), tpr.numpy()
