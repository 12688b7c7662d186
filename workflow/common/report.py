"""The comparison report: mean +- sd over seeds per track x dataset x experiment, reading
only ``metrics.json`` files, with the best experiment per metric marked."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workflow.common.metrics import read_metrics

KEYS = ["track", "dataset", "experiment"]


def _direction(value: Any) -> bool | None:
    return None if value is None else bool(value)


def long_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        for name, value in r["metrics"].items():
            rows.append(
                {
                    "track": r["track"],
                    "dataset": r["dataset"],
                    "experiment": r["experiment"],
                    "seed": int(r["seed"]),
                    "metric": name,
                    "value": math.nan if value is None else float(value),
                    # None: a value reported, not ranked (e.g. a decision threshold)
                    "higher_is_better": _direction(r["higher_is_better"][name]),
                }
            )
    return pd.DataFrame(rows, columns=[*KEYS, "seed", "metric", "value", "higher_is_better"])


def summarise(long: pd.DataFrame) -> pd.DataFrame:
    """One row per track x dataset x experiment x metric with mean, sd, seeds and `best`."""
    grouped = long.groupby([*KEYS, "metric"], sort=False)
    summary = grouped.agg(
        mean=("value", "mean"),
        sd=("value", "std"),
        seeds=("seed", "nunique"),
        higher_is_better=("higher_is_better", lambda v: v.iloc[0]),
    ).reset_index()
    summary["sd"] = summary["sd"].fillna(0.0)

    def mark(group: pd.DataFrame) -> pd.Series:
        """The best of two or more experiments; alone, an experiment is best of nothing, and
        a metric without a direction has no best."""
        if group["higher_is_better"].iloc[0] is None:
            return pd.Series(False, index=group.index)
        values = group["mean"] if group["higher_is_better"].iloc[0] else -group["mean"]
        if values.notna().sum() < 2:
            return pd.Series(False, index=values.index)
        return values == values.max()

    summary["best"] = summary.groupby(["track", "dataset", "metric"], sort=False, group_keys=False)[
        ["mean", "higher_is_better"]
    ].apply(mark)
    return summary


def _cell(row: pd.Series) -> str:
    if math.isnan(row["mean"]):
        return "-"
    text = f"{row['mean']:.3g} ± {row['sd']:.2g}" if row["seeds"] > 1 else f"{row['mean']:.3g}"
    return f"**{text}**" if row["best"] else text


def _heading(metric: str, higher_is_better: bool | None) -> str:
    return metric if higher_is_better is None else f"{metric} {'↑' if higher_is_better else '↓'}"


def markdown(
    summary: pd.DataFrame, variants: dict[tuple[str, str, str], dict] | None = None
) -> str:
    """The tables; under each, the plug-in variants its experiments ran (file and sha256,
    from ``variants``: (track, dataset, experiment) -> metrics.json's ``variants``)."""
    lines = [
        "# Summary",
        "",
        "Mean ± sd over seeds; **bold** = best per metric within a track and dataset; "
        "↑ higher is better, ↓ lower is better, no arrow: reported, not ranked.",
        "",
    ]
    for (track, dataset), block in summary.groupby(["track", "dataset"], sort=False):
        metrics: Sequence[str] = list(dict.fromkeys(block["metric"]))
        arrows = block.drop_duplicates("metric").set_index("metric")["higher_is_better"]
        header = ["experiment", "seeds", *[_heading(m, arrows[m]) for m in metrics]]
        lines += [
            f"## {track} / {dataset}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for experiment, rows in block.groupby("experiment", sort=False):
            by_metric = rows.set_index("metric")
            cells = [_cell(by_metric.loc[m]) for m in metrics]
            lines.append(f"| {experiment} | {rows['seeds'].max()} | " + " | ".join(cells) + " |")
        lines.append("")
        for experiment in dict.fromkeys(block["experiment"]):
            for key, v in (variants or {}).get((track, dataset, experiment), {}).items():
                lines.append(f"- {experiment}: {key} `{v['spec']}` (sha256 {v['sha256'][:12]})")
        if lines[-1] != "":
            lines.append("")
    return "\n".join(lines)


def build_report(metric_files: Iterable[str | Path]) -> tuple[pd.DataFrame, str]:
    records = [read_metrics(p) for p in metric_files]
    summary = summarise(long_table(records))
    variants = {
        (r["track"], r["dataset"], r["experiment"]): r["variants"]
        for r in records
        if r.get("variants")
    }
    return summary, markdown(summary, variants)
