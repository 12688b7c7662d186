"""The FLIP finding with its confidence: each mask ratio against mask 0 (CLIP), paired; and
each loss variant against the built-in loss at its mask ratio.

FLIP's claim (Li et al. 2023, Table 1a) is an equivalence at a lower cost: masking half the
image patches leaves zero-shot accuracy about where no masking has it, while the image tower
encodes half the tokens per step. So the comparison reports, per masked experiment:

- the accuracies, mean +- sd over seeds (as the summary does);
- ``delta_top1``: zero-shot top-1 minus the mask-0 run's of the same seed (same initial
  weights and data order: only the masking differs), averaged over the paired seeds;
- its confidence interval: a paired bootstrap over the val images (the same resampled images
  for both models, so what they share cancels); with 2 or more paired seeds also Student's t
  over the seeds' differences, and the interval reported is the wider of the two;
- ``cost_ratio``: the image tower's GFLOPs per sample and step over mask 0's (``image_gflops``
  of the metrics, counted from the operators' shapes: no timing).

From these, one sentence per masked experiment: "mask 0.5 is within X points of mask 0 at Y x
the image-tower cost", X the larger end of the interval in absolute value.

An experiment with a plug-in ``loss`` (workflow/flip/loss.py) changes the objective, not the
masking: it is paired instead with the experiment of the built-in loss at the same mask ratio
(``reference``, when there is exactly one), so its delta is the loss's effect alone; the
mask-0 reference of the masking finding is the built-in loss's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ACCURACIES = ("zeroshot_top1", "zeroshot_top5", "probe_top1")
#: The built-in loss (config/schema/flip.yaml ``loss``), which metrics from before the setting
#: existed trained with.
BUILTIN_LOSS = "clip"
CONFIDENCE = 0.95
RESAMPLES = 4000


def _correct(predictions: pd.DataFrame) -> pd.Series:
    """1.0 where the zero-shot prediction is the label, indexed by val image."""
    return (
        (predictions["zero_shot"] == predictions["label"])
        .astype(float)
        .set_axis(predictions["image"])
    )


def bootstrap_means(
    values: np.ndarray, resamples: int, rng: np.random.Generator, block: int = 200
) -> np.ndarray:
    """Means of ``resamples`` resamples (with replacement) of ``values``, drawn ``block`` at a
    time: ImageNet's 50,000 val images x 4,000 resamples at once take 3.2 GB (indices and
    the values they pick), over the 2 GB of the CPU_SMALL class; blocks of 200 take 160 MB
    (tests/benchmarks/flip_bootstrap_benchmark.py). The draws are those of one call: the
    generator's stream is consumed in the same order."""
    out = np.empty(resamples)
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        out[start : start + count] = values[
            rng.integers(values.size, size=(count, values.size))
        ].mean(axis=1)
    return out


def paired_interval(
    reference: Sequence[pd.DataFrame],
    other: Sequence[pd.DataFrame],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Zero-shot top-1 of ``other`` minus ``reference`` (one predictions table per paired
    seed, in the same seed order) with its interval (module docstring)."""
    diffs = [_correct(o).sub(_correct(r)) for r, o in zip(reference, other, strict=True)]
    per_image = pd.concat(diffs, axis=1).dropna().mean(axis=1).to_numpy()
    if per_image.size == 0:
        raise ValueError("the paired runs share no val image")
    per_seed = np.array([d.dropna().mean() for d in diffs])
    rng = np.random.default_rng(seed)
    boot = bootstrap_means(per_image, resamples, rng)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    method = f"paired bootstrap over {per_image.size} val images"
    n = len(per_seed)
    if n >= 2:
        half = stats.t.ppf(1 - tail, n - 1) * per_seed.std(ddof=1) / np.sqrt(n)
        low, high = min(low, per_seed.mean() - half), max(high, per_seed.mean() + half)
        method += f" and t over {n} seeds (the wider)"
    return {
        "delta_top1": float(per_seed.mean()),
        "delta_sd": float(per_seed.std(ddof=1)) if n >= 2 else float("nan"),
        "ci_low": float(low),
        "ci_high": float(high),
        "paired_seeds": n,
        "val_images": int(per_image.size),
        "ci_method": method,
    }


def comparison_table(
    records: Sequence[Mapping[str, Any]],
    predictions: Mapping[tuple[str, int], pd.DataFrame],
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """One row per experiment, by mask ratio (the built-in loss first): accuracies (mean, sd
    over seeds), image-tower GFLOPs and their ratio to mask 0, and the paired difference to
    its ``reference`` with its interval (module docstring). ``predictions``: (experiment,
    seed) -> that run's predictions.parquet."""
    runs = pd.DataFrame(
        [
            {"experiment": r["experiment"], "seed": int(r["seed"]),
             "mask_ratio": float(r["extra"]["mask_ratio"]),
             "loss": str(r["extra"].get("loss", BUILTIN_LOSS)),
             **{k: float(r["metrics"][k]) for k in (*ACCURACIES, "image_gflops")}}
            for r in records
        ]
    )  # fmt: skip
    builtin = runs[runs["loss"] == BUILTIN_LOSS]

    def only_one(ratio: float) -> str | None:
        """The built-in loss's experiment at ``ratio``; None unless exactly one."""
        found = builtin.loc[builtin["mask_ratio"] == ratio, "experiment"].unique()
        return found[0] if len(found) == 1 else None

    # without exactly one mask-0 experiment there is nothing to pair with: accuracies only
    mask0 = only_one(0.0)
    ref_gflops = runs.loc[runs["experiment"] == mask0, "image_gflops"].mean()
    rows = []
    for experiment, block in runs.groupby("experiment", sort=False):
        loss, ratio = block["loss"].iloc[0], block["mask_ratio"].iloc[0]
        row: dict[str, Any] = {"experiment": experiment, "mask_ratio": ratio,
                               "seeds": len(block), "loss": loss}  # fmt: skip
        for key in ACCURACIES:
            row[f"{key}_mean"] = block[key].mean()
            row[f"{key}_sd"] = block[key].std(ddof=1) if len(block) > 1 else float("nan")
        row["image_gflops"] = block["image_gflops"].mean()
        row["cost_ratio"] = row["image_gflops"] / ref_gflops
        reference = mask0 if loss == BUILTIN_LOSS else only_one(ratio)
        ref_seeds = set(runs.loc[runs["experiment"] == reference, "seed"])
        paired = sorted(ref_seeds & set(block["seed"]))
        if reference is not None and experiment != reference and paired:
            row["reference"] = reference
            row.update(
                paired_interval(
                    [predictions[(reference, s)] for s in paired],
                    [predictions[(experiment, s)] for s in paired],
                    confidence,
                )
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    order = table.assign(variant=table["loss"] != BUILTIN_LOSS)
    order = order.sort_values(["mask_ratio", "variant"], kind="stable")
    return table.loc[order.index].reset_index(drop=True)


def loss_name(loss: str) -> str:
    """A loss as the table shows it: the built-in's name, a variant's class."""
    return loss.rpartition(":")[2]


def finding(row: Mapping[str, Any], confidence: float = CONFIDENCE) -> str:
    """The sentence of one paired row of :func:`comparison_table`: a masked experiment's
    against mask 0, a loss variant's against the built-in loss at its mask ratio."""
    within = 100 * max(abs(row["ci_low"]), abs(row["ci_high"]))
    if row.get("loss", BUILTIN_LOSS) != BUILTIN_LOSS:
        return (
            f"loss {loss_name(row['loss'])} at mask {row['mask_ratio']:g} is within "
            f"{within:.1f} points of {row['reference']} (loss {BUILTIN_LOSS}, same mask) in "
            f"zero-shot top-1 ({100 * row['delta_top1']:+.1f}, {confidence:.0%} CI "
            f"{100 * row['ci_low']:+.1f} to {100 * row['ci_high']:+.1f})"
        )
    return (
        f"mask {row['mask_ratio']:g} is within {within:.1f} points of mask 0 in zero-shot "
        f"top-1 ({100 * row['delta_top1']:+.1f}, {confidence:.0%} CI "
        f"{100 * row['ci_low']:+.1f} to {100 * row['ci_high']:+.1f}) at "
        f"{row['cost_ratio']:.2f}x the image-tower cost per sample"
    )


def markdown(table: pd.DataFrame, confidence: float = CONFIDENCE) -> str:
    """The comparison as a Markdown table and the findings, for the report."""

    def pm(row: pd.Series, key: str) -> str:
        sd = row[f"{key}_sd"]
        return f"{row[f'{key}_mean']:.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")

    lines = [
        "# FLIP: each mask ratio against mask 0",
        "",
        "Accuracies mean ± sd over seeds; Δ top-1 = zero-shot top-1 minus the mask-0 run of the "
        f"same seed (a loss variant's: minus the built-in loss's run at its mask ratio), with "
        f"its {confidence:.0%} CI; cost = image-tower GFLOPs per sample and step (forward + "
        "backward) relative to mask 0.",
        "",
        "| experiment | mask | seeds | loss | zero-shot top-1 | zero-shot top-5 | probe top-1 "
        "| image GFLOPs | cost | Δ top-1 (points) | CI |",
        "|" + "---|" * 11,
    ]
    for _, row in table.iterrows():
        delta, loss = row.get("delta_top1", float("nan")), row.get("loss", BUILTIN_LOSS)
        if not pd.isna(delta):
            low, high = 100 * row["ci_low"], 100 * row["ci_high"]
            paired = f"{100 * delta:+.1f} | {low:+.1f} to {high:+.1f} |"
        elif row["mask_ratio"] == 0 and loss == BUILTIN_LOSS:
            paired = "reference | |"
        else:
            paired = "- | |"
        lines.append(
            f"| {row['experiment']} | {row['mask_ratio']:g} | {row['seeds']} | "
            f"{loss_name(loss)} | {pm(row, 'zeroshot_top1')} | {pm(row, 'zeroshot_top5')} | "
            f"{pm(row, 'probe_top1')} | {row['image_gflops']:.4g} | {row['cost_ratio']:.2f}x | "
            + paired
        )
    lines.append("")
    for _, row in table.iterrows():
        if not pd.isna(row.get("delta_top1", float("nan"))):
            lines.append(f"- {finding(row, confidence)} ({row['ci_method']}).")
    return "\n".join(lines) + "\n"
