"""The FLIP figure: what masking buys (images/s) and costs (accuracy), per mask ratio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workflow.common.plotting import plt, save_figure

ACCURACIES = {"zeroshot_top1": "zero-shot top-1", "probe_top1": "linear probe"}


def runs_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: experiment, seed, mask ratio, images/s and the accuracies."""
    return pd.DataFrame(
        [
            {
                "experiment": r["experiment"],
                "seed": r["seed"],
                "mask_ratio": float(r["extra"]["mask_ratio"]),
                "images_per_s": float(r["extra"]["images_per_s"]),
                **{k: float(r["metrics"][k]) for k in ACCURACIES},
            }
            for r in records
        ]
    )


def mask_ratio_figure(records: Sequence[dict[str, Any]], path: Path, chance: float | None) -> None:
    """Left: accuracies vs mask ratio (mean +- sd over seeds, runs as dots); right: training
    images/s of the masked phase vs mask ratio, relative to mask 0 when it ran."""
    table = runs_table(records).sort_values("mask_ratio")
    mean = table.groupby("mask_ratio").mean(numeric_only=True)
    sd = table.groupby("mask_ratio").std(numeric_only=True).fillna(0.0)
    fig, (acc, speed) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, label in ACCURACIES.items():
        acc.errorbar(mean.index, mean[key], yerr=sd[key], marker="o", capsize=3, label=label)
        acc.scatter(table["mask_ratio"], table[key], s=8, alpha=0.4)
    if chance is not None:
        acc.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        acc.axhline(3 * chance, color="grey", ls="--", lw=1, label="3x chance")
    acc.set_xlabel("mask ratio (pre-training)")
    acc.set_ylabel("accuracy on the val set")
    acc.set_ylim(0, 1)
    acc.legend(fontsize=8)
    speed.errorbar(mean.index, mean["images_per_s"], yerr=sd["images_per_s"], marker="o", capsize=3)
    if 0.0 in mean.index and mean.loc[0.0, "images_per_s"] > 0:
        for ratio, value in mean["images_per_s"].items():
            speed.annotate(f"{value / mean.loc[0.0, 'images_per_s']:.2f}x", (ratio, value),
                           textcoords="offset points", xytext=(4, 4), fontsize=8)  # fmt: skip
    speed.set_xlabel("mask ratio")
    speed.set_ylabel("training images/s")
    for ax in (acc, speed):
        ax.grid(alpha=0.3)
    fig.suptitle("FLIP: accuracy and training speed vs mask ratio")
    save_figure(fig, path)
