"""Figures of the sequence track: predicted vs measured level per experiment."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.common.plotting import plt, save_figure
from workflow.sequence.metrics import expression_metrics


def run_r2(frame: pd.DataFrame) -> np.ndarray:
    """r^2 of each run (seed or held-out fold) on its own test genes: the numbers the summary
    averages. Pooling the runs' points into one r^2 mixes folds' offsets and reads lower."""
    runs = frame.groupby("run") if "run" in frame else [("all", frame)]
    return np.array(
        [
            expression_metrics(part["label"].to_numpy(), part["prediction"].to_numpy())["r2"]
            for _, part in runs
        ]
    )


def r2_label(values: np.ndarray) -> str:
    """``r^2 m ± sd (n runs)`` as the summary table writes it, or the one run's value."""
    if len(values) == 1:
        return f"r$^2$ {values[0]:.3f}"
    return f"r$^2$ {values.mean():.3f} ± {values.std(ddof=1):.3f} ({len(values)} runs)"


def scatter_figure(
    predictions: Mapping[str, pd.DataFrame], path: Path, ceilings: Mapping[str, float]
) -> None:
    """One panel per experiment, every run's test genes drawn together: prediction vs z-scored
    label; the title gives r^2 as the summary does (mean ± sd over runs of each run's r^2) and
    the demo's recorded ceiling for the experiment's task when known."""
    names = sorted(predictions)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 3.6 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for ax, name in zip(axes.flat, names, strict=False):
        frame = predictions[name]
        ax.scatter(frame["label"], frame["prediction"], s=4, alpha=0.4)
        low = min(frame["label"].min(), frame["prediction"].min())
        high = max(frame["label"].max(), frame["prediction"].max())
        ax.plot([low, high], [low, high], color="grey", ls=":", lw=1)
        task = str(frame["task"].iloc[0]) if "task" in frame else ""
        ceiling = f", ceiling {ceilings[task]:.2f}" if task in ceilings else ""
        ax.set_title(f"{name}\n{r2_label(run_r2(frame))}{ceiling}", fontsize=9)
        ax.set_xlabel("measured (z)")
        ax.set_ylabel("predicted (z)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("Test genes: predicted vs measured (r$^2$: mean ± sd over runs, as the summary)")
    save_figure(fig, path)
