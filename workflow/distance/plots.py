"""Figures of the distance track."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.common.plotting import plt, save_figure


def error_vs_distance(
    predictions: Mapping[str, pd.DataFrame], path: Path, bin_m: float = 5.0
) -> None:
    """Mean absolute error per true-distance bin, one line per model (seeds pooled)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    top = max(float(p["distance"].max()) for p in predictions.values())
    edges = np.arange(0, top + bin_m, bin_m)
    centres = (edges[:-1] + edges[1:]) / 2
    for name, frame in sorted(predictions.items()):
        err = (frame["prediction"] - frame["distance"]).abs()
        which = np.digitize(frame["distance"], edges) - 1
        means = [
            err[which == i].mean() if (which == i).any() else np.nan for i in range(len(centres))
        ]
        ax.plot(centres, means, marker="o", ms=3, label=name)
    ax.set_xlabel("true distance (m)")
    ax.set_ylabel("mean absolute error (m)")
    ax.set_title("Absolute error vs true distance")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
