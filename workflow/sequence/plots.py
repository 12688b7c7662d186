"""Figures of the sequence track: predicted vs measured level per experiment."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from workflow.common.plotting import plt, save_figure
from workflow.sequence.metrics import expression_metrics


def scatter_figure(
    predictions: Mapping[str, pd.DataFrame], path: Path, ceilings: Mapping[str, float]
) -> None:
    """One panel per experiment (seeds pooled): prediction vs z-scored label, r^2 in the
    title, and the demo's recorded ceiling for the experiment's task when known."""
    names = sorted(predictions)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        frame = predictions[name]
        r2 = expression_metrics(frame["label"].to_numpy(), frame["prediction"].to_numpy())["r2"]
        ax.scatter(frame["label"], frame["prediction"], s=4, alpha=0.4)
        low = min(frame["label"].min(), frame["prediction"].min())
        high = max(frame["label"].max(), frame["prediction"].max())
        ax.plot([low, high], [low, high], color="grey", ls=":", lw=1)
        task = str(frame["task"].iloc[0]) if "task" in frame else ""
        ceiling = f", ceiling {ceilings[task]:.2f}" if task in ceilings else ""
        ax.set_title(f"{name}\nr$^2$ {r2:.3f}{ceiling}", fontsize=9)
        ax.set_xlabel("measured (z)")
        ax.set_ylabel("predicted (z)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("Test genes: predicted vs measured")
    save_figure(fig, path)
