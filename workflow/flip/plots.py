"""The FLIP figure: what masking buys (images/s) and costs (accuracy), per mask ratio, and,
given the comparison (workflow/flip/compare.py), each masked run's paired difference to mask 0
with its confidence interval against its image-tower cost. It is about masking: runs with a
plug-in ``loss`` are left out of it (comparison.md pairs them with the built-in loss)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workflow.common.atomic import atomic_path, write_text
from workflow.common.metrics import read_metrics, read_predictions
from workflow.common.plotting import plt, save_figure
from workflow.flip.compare import BUILTIN_LOSS, comparison_table, finding, markdown
from workflow.flip.image_folder import read_classnames

log = logging.getLogger("lsai.flip.plots")

ACCURACIES = {"zeroshot_top1": "zero-shot top-1", "probe_top1": "linear probe"}


def runs_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: experiment, seed, mask ratio, loss, images/s and the accuracies."""
    return pd.DataFrame(
        [
            {
                "experiment": r["experiment"],
                "seed": r["seed"],
                "mask_ratio": float(r["extra"]["mask_ratio"]),
                "loss": str(r["extra"].get("loss", BUILTIN_LOSS)),
                "images_per_s": float(r["extra"]["images_per_s"]),
                **{k: float(r["metrics"][k]) for k in ACCURACIES},
            }
            for r in records
        ]
    )


def mask_ratio_figure(
    records: Sequence[dict[str, Any]],
    path: Path,
    chance: float | None,
    comparison: pd.DataFrame | None = None,
) -> None:
    """Left: accuracies vs mask ratio (mean +- sd over seeds, runs as dots); middle: training
    images/s of the masked phase vs mask ratio, relative to mask 0 when it ran; right (with a
    ``comparison``): zero-shot top-1 minus mask 0's with its interval vs the image-tower cost,
    and the mask-0.5 finding as the title. The built-in loss's runs only, where there are any."""
    table = runs_table(records)
    builtin = table[table["loss"] == BUILTIN_LOSS]
    table = (table if builtin.empty else builtin).sort_values("mask_ratio")
    mean = table.groupby("mask_ratio").mean(numeric_only=True)
    sd = table.groupby("mask_ratio").std(numeric_only=True).fillna(0.0)
    paired = None
    if comparison is not None and "delta_top1" in comparison:
        paired = comparison.dropna(subset=["delta_top1"])
        if "loss" in paired:
            paired = paired[paired["loss"] == BUILTIN_LOSS]
    panels = 2 if paired is None or paired.empty else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8))
    acc, speed = axes[0], axes[1]
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
    title = "FLIP: accuracy and training speed vs mask ratio"
    if panels == 3:
        delta = axes[2]
        low = 100 * (paired["delta_top1"] - paired["ci_low"])
        high = 100 * (paired["ci_high"] - paired["delta_top1"])
        delta.errorbar(paired["cost_ratio"], 100 * paired["delta_top1"], yerr=[low, high],
                       fmt="o", capsize=4)  # fmt: skip
        for _, row in paired.iterrows():
            at = (row["cost_ratio"], 100 * row["delta_top1"])
            delta.annotate(f"mask {row['mask_ratio']:g}", at, textcoords="offset points",
                           xytext=(6, 4), fontsize=8)  # fmt: skip
        delta.axhline(0.0, color="grey", ls=":", lw=1)
        delta.set_xlim(0, 1.05)
        delta.set_xlabel("image-tower GFLOPs per sample / mask 0's")
        delta.set_ylabel("zero-shot top-1 - mask 0 (points, 95% CI)")
        half = paired[paired["mask_ratio"] == 0.5]
        if not half.empty:
            title = "FLIP: " + finding(half.iloc[0])
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9 if panels == 3 else None)
    save_figure(fig, path)


def figures_stage(
    metrics: Sequence[Path], out: Path, val: Path | None = None, comparison: Path | None = None
) -> None:
    """The figures stage: accuracy and images/s against mask ratio (chance from the recorded
    class count, else ``val``'s classnames.txt); with ``comparison``, each mask ratio against
    mask 0 from the predictions.parquet beside each metrics.json, as CSV and Markdown."""
    records = [read_metrics(path) for path in metrics]
    table = None
    if comparison:
        predictions = {
            (r["experiment"], int(r["seed"])): read_predictions(
                Path(p).with_name("predictions.parquet")
            )
            for r, p in zip(records, metrics, strict=True)
        }
        table = comparison_table(records, predictions)
        with atomic_path(comparison) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        text = markdown(table)
        write_text(comparison.with_suffix(".md"), text)
        log.info("comparison -> %s\n%s", comparison, text)
    classes = {r.get("extra", {}).get("classes") for r in records}  # recorded by evaluate
    if len(classes) == 1 and None not in classes:
        chance = 1 / int(classes.pop())
    else:  # metrics of an older evaluation: the val folder's classnames.txt
        chance = 1 / len(read_classnames(val)) if val else None
    mask_ratio_figure(records, out, chance, table)
    log.info("mask-ratio figure of %d runs -> %s", len(records), out)
