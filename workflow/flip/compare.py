"""The FLIP finding with its confidence: each mask ratio against mask 0 (CLIP), paired.

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ACCURACIES = ("zeroshot_top1", "zeroshot_top5", "probe_top1")
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
    """One row per experiment, by mask ratio: accuracies (mean, sd over seeds), image-tower
    GFLOPs and their ratio to mask 0, and the paired difference to mask 0 with its interval.
    ``predictions``: (experiment, seed) -> that run's predictions.parquet."""
    runs = pd.DataFrame(
        [
            {"experiment": r["experiment"], "seed": int(r["seed"]),
             "mask_ratio": float(r["extra"]["mask_ratio"]),
             **{k: float(r["metrics"][k]) for k in (*ACCURACIES, "image_gflops")}}
            for r in records
        ]
    )  # fmt: skip
    references = runs.loc[runs["mask_ratio"] == 0.0, "experiment"].unique()
    # without exactly one mask-0 experiment there is nothing to pair with: accuracies only
    reference = references[0] if len(references) == 1 else None
    ref_seeds = set(runs.loc[runs["experiment"] == reference, "seed"])
    ref_gflops = runs.loc[runs["experiment"] == reference, "image_gflops"].mean()
    rows = []
    for experiment, block in runs.groupby("experiment", sort=False):
        row: dict[str, Any] = {
            "experiment": experiment,
            "mask_ratio": block["mask_ratio"].iloc[0],
            "seeds": len(block),
        }
        for key in ACCURACIES:
            row[f"{key}_mean"] = block[key].mean()
            row[f"{key}_sd"] = block[key].std(ddof=1) if len(block) > 1 else float("nan")
        row["image_gflops"] = block["image_gflops"].mean()
        row["cost_ratio"] = row["image_gflops"] / ref_gflops
        paired = sorted(ref_seeds & set(block["seed"]))
        if experiment != reference and paired:
            row.update(
                paired_interval(
                    [predictions[(reference, s)] for s in paired],
                    [predictions[(experiment, s)] for s in paired],
                    confidence,
                )
            )
        rows.append(row)
    return pd.DataFrame(rows).sort_values("mask_ratio").reset_index(drop=True)


def finding(row: Mapping[str, Any], confidence: float = CONFIDENCE) -> str:
    """The sentence of one masked experiment's row of :func:`comparison_table`."""
    within = 100 * max(abs(row["ci_low"]), abs(row["ci_high"]))
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
        f"same seed, with its {confidence:.0%} CI; cost = image-tower GFLOPs per sample and "
        "step (forward + backward) relative to mask 0.",
        "",
        "| experiment | mask | seeds | zero-shot top-1 | zero-shot top-5 | probe top-1 "
        "| image GFLOPs | cost | Δ top-1 (points) | CI |",
        "|" + "---|" * 10,
    ]
    for _, row in table.iterrows():
        delta = row.get("delta_top1", float("nan"))
        paired = not pd.isna(delta)
        lines.append(
            f"| {row['experiment']} | {row['mask_ratio']:g} | {row['seeds']} | "
            f"{pm(row, 'zeroshot_top1')} | {pm(row, 'zeroshot_top5')} | "
            f"{pm(row, 'probe_top1')} | {row['image_gflops']:.4g} | {row['cost_ratio']:.2f}x | "
            + (f"{100 * delta:+.1f} | {100 * row['ci_low']:+.1f} to {100 * row['ci_high']:+.1f} |"
               if paired else "reference | |" if row["mask_ratio"] == 0 else "- | |")
        )  # fmt: skip
    lines.append("")
    for _, row in table.iterrows():
        if not pd.isna(row.get("delta_top1", float("nan"))):
            lines.append(f"- {finding(row, confidence)} ({row['ci_method']}).")
    return "\n".join(lines) + "\n"
