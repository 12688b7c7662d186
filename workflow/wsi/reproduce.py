"""``wsi_reproduce``: our runs of an experiment against the numbers its paper published.

A published number is one run on one test set, so the tolerance is that number's own sampling
error on a test set of our size: two standard errors, binomial for ACC
(``sqrt(p (1 - p) / n)``) and Hanley & McNeil (1982) for AUC (from the test set's positives
and negatives). A number is reproduced when the mean over our seeds lies within it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.common.metrics import read_metrics, read_predictions


def acc_standard_error(acc: float, n: int) -> float:
    return math.sqrt(acc * (1.0 - acc) / n)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil's standard error of an AUC from ``positives`` x ``negatives`` pairs."""
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    variance = (
        auc * (1.0 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


@dataclass(frozen=True)
class Comparison:
    metric: str
    published: float
    mean: float
    sd: float
    seeds: int
    tolerance: float

    @property
    def reproduced(self) -> bool:
        return abs(self.mean - self.published) <= self.tolerance


def compare(
    metrics: Sequence[Mapping[str, float]], published: Mapping[str, float], labels: np.ndarray
) -> list[Comparison]:
    """Each published metric (``AUC``, ``ACC``) against our seeds' values on a test set with
    ``labels`` (0/1 per slide)."""
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("the test set needs slides of both classes to compare AUC and ACC")
    rows = []
    for name, value in published.items():
        if name == "AUC":
            se = auc_standard_error(value, positives, negatives)
        elif name == "ACC":
            se = acc_standard_error(value, positives + negatives)
        else:
            raise ValueError(f"published metric {name!r}: only AUC and ACC are compared")
        ours = np.array([m[name] for m in metrics], dtype=float)
        sd = float(ours.std(ddof=1)) if len(ours) > 1 else 0.0
        rows.append(Comparison(name, float(value), float(ours.mean()), sd, len(ours), 2.0 * se))
    return rows


def reproduction_report(
    metrics_paths: Sequence[Path], published: Mapping[str, float], source: str, out: Path
) -> list[Comparison]:
    """Read the runs (their ``metrics.json`` and the predictions beside it), compare, and
    write a Markdown table to ``out``."""
    if not metrics_paths:
        raise ValueError("no runs to compare")
    records = [read_metrics(p) for p in metrics_paths]
    for path, record in zip(metrics_paths, records, strict=True):
        missing = [k for k in published if k not in record["metrics"]]
        if missing:
            raise InputError(path, f"no {', '.join(missing)} among its metrics")
    labels = read_predictions(Path(metrics_paths[0]).with_name("predictions.parquet"))["label"]
    rows = compare([r["metrics"] for r in records], published, labels.to_numpy())
    first = records[0]
    lines = [
        f"# {first['dataset']} / {first['experiment']}: reproduction",
        "",
        f"Published: {source}. Test slides: "
        f"{len(labels)} ({int((labels == 1).sum())} positive). Tolerance: two standard errors "
        "of the published value on this test set (ACC binomial, AUC Hanley & McNeil).",
        "",
        "| metric | published | ours (mean ± sd) | seeds | tolerance | reproduced |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.metric} | {r.published:.3f} | {r.mean:.3f} ± {r.sd:.3f} | {r.seeds} | "
            f"± {r.tolerance:.3f} | {'yes' if r.reproduced else 'no'} |"
        )
    with atomic_path(out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return rows
