"""Figures of the WSI track: ROC curves per experiment, attention heatmaps per test slide."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.common.plotting import plt, save_figure
from workflow.wsi.metrics import roc_curve


def roc_figure(predictions: Mapping[str, pd.DataFrame], path: Path) -> None:
    """One ROC curve per experiment over its test slides (seeds pooled), AUC in the legend."""
    from workflow.wsi.metrics import slide_metrics

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, frame in sorted(predictions.items()):
        labels, probs = frame["label"].to_numpy(), frame["prob"].to_numpy()
        fpr, tpr = roc_curve(labels, probs)
        auc = slide_metrics(labels, probs)["AUC"]
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Slide-level ROC, test split")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def heatmap_figure(
    thumbnail: np.ndarray,
    thumbnail_downsample: float,
    coords: np.ndarray,
    footprint: int,
    scores: np.ndarray,
    title: str,
    path: Path,
) -> None:
    """Tile scores (min-max scaled) painted over the slide's thumbnail at the tiles' places."""
    heat = np.full(thumbnail.shape[:2], np.nan, dtype=np.float32)
    span = np.ptp(scores) if len(scores) else 0.0
    scaled = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    size = max(1, round(footprint / thumbnail_downsample))
    for (x, y), value in zip(coords, scaled, strict=True):
        col, row = round(x / thumbnail_downsample), round(y / thumbnail_downsample)
        heat[row : row + size, col : col + size] = value
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    axes[0].imshow(thumbnail)
    axes[0].set_title("thumbnail")
    axes[1].imshow(thumbnail)
    shown = axes[1].imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    axes[1].set_title("attention")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    fig.suptitle(title)
    save_figure(fig, path)
