"""The comparison report: per track x dataset x experiment x metric the mean, sd and 95%
interval over seeds, and each experiment against its track's baseline by a paired t-test
over the seeds both ran; reads only ``metrics.json`` files.

Why paired: each seed is one draw of the initial weights and data order, shared by the two
experiments; the spread between seeds is often larger than a variant's effect, and pairing
removes it. A variant is marked better (or worse) only where the test says so at
:data:`ALPHA` - never on a higher mean alone, never with fewer than two common seeds, and
never in a table of one row."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from workflow.common.metrics import read_metrics

KEYS = ["track", "dataset", "experiment"]
ALPHA = 0.05  # two-sided level of the paired test, and 1 - the interval's coverage
#: Settings an experiment must share with its baseline to be tested against it: a run that
#: predicts another target (the sequence track's mrna / protein / joint) is not comparable.
COMPARABLE_BY = ("task",)


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
                    "comparable": _comparable(r),
                }
            )
    columns = [*KEYS, "seed", "metric", "value", "higher_is_better", "comparable"]
    return pd.DataFrame(rows, columns=columns)


def _comparable(record: dict[str, Any]) -> str:
    settings = (record.get("extra") or {}).get("settings") or {}
    return " ".join(f"{k}={settings[k]}" for k in COMPARABLE_BY if k in settings)


def summarise(long: pd.DataFrame, baselines: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per track x dataset x experiment x metric: mean, sd, seeds, the 95% t-interval
    of the mean (``ci_low``, ``ci_high``; NaN with one seed), ``best`` (the highest mean of
    two or more experiments, as data: not a claim), and against the track's baseline
    (``baselines``: track -> experiment) ``p_value`` of the paired t-test over the common
    seeds and ``verdict`` (``better`` / ``worse`` where p < ALPHA, else empty)."""
    grouped = long.groupby([*KEYS, "metric"], sort=False)
    summary = grouped.agg(
        mean=("value", "mean"),
        sd=("value", "std"),
        seeds=("seed", "nunique"),
        values=("value", "count"),
        higher_is_better=("higher_is_better", lambda v: v.iloc[0]),
    ).reset_index()
    summary["sd"] = summary["sd"].fillna(0.0)
    n = summary.pop("values").astype(float)
    half = stats.t.ppf(1 - ALPHA / 2, np.maximum(n - 1, 1)) * summary["sd"] / np.sqrt(n)
    half = half.where(n > 1)
    summary["ci_low"], summary["ci_high"] = summary["mean"] - half, summary["mean"] + half

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
    # one seed x experiment table per track, dataset and metric, shared by its rows' tests
    tables = {
        key: (
            runs.pivot_table(index="seed", columns="experiment", values="value", dropna=False),
            runs.groupby("experiment")["comparable"].agg(set),
        )
        for key, runs in long.groupby(["track", "dataset", "metric"], sort=False)
    }
    tests = [
        _paired(
            *tables[(row.track, row.dataset, row.metric)], row, (baselines or {}).get(row.track)
        )
        for row in summary.itertuples()
    ]
    summary["baseline"] = [t[0] for t in tests]
    summary["paired_seeds"] = [t[1] for t in tests]
    summary["p_value"] = [t[2] for t in tests]
    summary["verdict"] = [t[3] for t in tests]
    return summary


def _paired(
    values: pd.DataFrame, kinds: pd.Series, row: Any, baseline: str | None
) -> tuple[str, int, float, str]:
    """(baseline, common seeds, p, verdict) of one summary row against its baseline's row;
    ``values`` is the metric's seed x experiment table, ``kinds`` each experiment's
    COMPARABLE_BY settings."""
    if not baseline or row.experiment == baseline:
        return baseline or "", 0, math.nan, ""
    if baseline not in kinds or kinds[baseline] != kinds[row.experiment]:
        return baseline, 0, math.nan, ""  # no baseline run, or another target
    pairs = values[[row.experiment, baseline]].dropna()
    if len(pairs) < 2 or row.higher_is_better is None:
        return baseline, len(pairs), math.nan, ""
    diff = pairs[row.experiment] - pairs[baseline]
    # equal differences on every seed (deterministic runs) have no spread to test against
    p = (
        math.nan
        if diff.std() == 0
        else float(stats.ttest_rel(pairs[row.experiment], pairs[baseline]).pvalue)
    )
    if not p < ALPHA:
        return baseline, len(pairs), p, ""
    gain = diff.mean() if row.higher_is_better else -diff.mean()
    return baseline, len(pairs), p, "better" if gain > 0 else "worse"


def _cell(row: pd.Series) -> str:
    """``mean``, with more than one seed ``mean ± sd [95% interval]``; bold where the paired
    test finds it better than the baseline, ▼ where worse."""
    if math.isnan(row["mean"]):
        return "-"
    text = f"{row['mean']:.3g}"
    if row["seeds"] > 1:
        text += f" ± {row['sd']:.2g}"
        if not math.isnan(row["ci_low"]):
            text += f" [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"
    if row["verdict"] == "better":
        return f"**{text}**"
    return f"{text} ▼" if row["verdict"] == "worse" else text


def _heading(metric: str, higher_is_better: bool | None) -> str:
    return metric if higher_is_better is None else f"{metric} {'↑' if higher_is_better else '↓'}"


def _baseline_line(block: pd.DataFrame) -> str:
    baseline = block["baseline"].iloc[0]
    if not baseline:
        return "No baseline set for this track: nothing is tested."
    if baseline not in set(block["experiment"]):
        return f"Baseline `{baseline}` did not run here: nothing is tested."
    tested = block[block["paired_seeds"] >= 2]
    if tested.empty:
        return f"Baseline: `{baseline}`; no experiment shares two seeds with it: nothing is tested."
    low, high = tested["paired_seeds"].min(), tested["paired_seeds"].max()
    return f"Baseline: `{baseline}`; paired over {low if low == high else f'{low}-{high}'} seeds."


def markdown(
    summary: pd.DataFrame, provenance: Mapping[tuple[str, str, str], list[dict]] | None = None
) -> str:
    """The tables; under each, where each row comes from (``provenance``: (track, dataset,
    experiment) -> its runs' metrics.json records): git commit, config hash, variant files."""
    provenance = provenance or {}
    lines = [
        "# Summary",
        "",
        "Mean ± sd [95% t-interval of the mean] over seeds. Each experiment is compared with "
        "its track's baseline by a two-sided paired t-test over the seeds both ran "
        f"(p < {ALPHA}): **bold** = better than the baseline, ▼ = worse; a higher mean "
        "alone, a single seed or a table of one row marks nothing. ↑ higher is better, "
        "↓ lower is better, no arrow: reported, not ranked.",
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
        lines += ["", _baseline_line(block), ""]
        for experiment in dict.fromkeys(block["experiment"]):
            lines.append(_provenance_line(experiment, provenance.get((track, dataset, experiment))))
        lines.append("")
    return "\n".join(lines)


def _provenance_line(experiment: str, runs: Sequence[dict[str, Any]] | None) -> str:
    """Where a row comes from: the commits and config hashes of its runs, and each plug-in
    variant's spec and file hash (a row whose runs differ shows every value)."""

    def values(get: Any) -> str:
        return "/".join(dict.fromkeys(str(get(r)) for r in runs or ()))

    line = f"- {experiment}: commit {values(lambda r: str(r['git_commit'])[:12])}, "
    line += f"config {values(lambda r: r['config_hash'])}"
    for key in dict.fromkeys(k for r in runs or () for k in (r.get("variants") or {})):
        specs = values(lambda r, k=key: r["variants"][k]["spec"])
        digests = values(lambda r, k=key: r["variants"][k]["sha256"][:12])
        line += f"; {key} `{specs}` (sha256 {digests})"
    return line


def build_report(
    metric_files: Iterable[str | Path], baselines: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, str]:
    records = [read_metrics(p) for p in metric_files]
    summary = summarise(long_table(records), baselines)
    provenance: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        provenance.setdefault((r["track"], r["dataset"], r["experiment"]), []).append(r)
    return summary, markdown(summary, provenance)
