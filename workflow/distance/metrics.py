"""Distance metrics: ALE/ALP/ALOE (per-object distance literature) and the monocular-depth
family (AbsRel, SqRel, RMSE, RMSE-log, delta thresholds)."""

from __future__ import annotations

import numpy as np

DISTANCE_BINS = ((0, 10), (10, 20), (20, 30), (30, 100))
OCCLUSION_BINS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.75), (0.75, 1.0))
ALP_THRESHOLDS = (0.5, 1.0, 2.0)
EPS = 1e-6


def _label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def distance_metrics(
    true: np.ndarray, pred: np.ndarray, occlusion: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics for one run; an empty bin gives NaN (written as null)."""
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if true.shape != pred.shape or true.size == 0:
        raise ValueError(f"need equal, non-empty arrays, got {true.shape} and {pred.shape}")
    err = np.abs(pred - true)
    safe_pred = np.maximum(pred, EPS)
    out: dict[str, float] = {"ALE": float(err.mean())}
    for lo, hi in DISTANCE_BINS:
        sel = (true >= lo) & (true < hi)
        out[f"ALE_{_label(lo, hi)}m"] = float(err[sel].mean()) if sel.any() else float("nan")
    for t in ALP_THRESHOLDS:
        out[f"ALP@{t:g}m"] = float((err <= t).mean())
    if occlusion is not None:
        occlusion = np.asarray(occlusion, dtype=np.float64)
        for i, (lo, hi) in enumerate(OCCLUSION_BINS):
            last = i == len(OCCLUSION_BINS) - 1
            sel = (occlusion >= lo) & ((occlusion <= hi) if last else (occlusion < hi))
            out[f"ALOE_{_label(lo, hi)}"] = float(err[sel].mean()) if sel.any() else float("nan")
    out["AbsRel"] = float((err / true).mean())
    out["SqRel"] = float(((pred - true) ** 2 / true).mean())
    out["RMSE"] = float(np.sqrt(((pred - true) ** 2).mean()))
    out["RMSE_log"] = float(np.sqrt(((np.log(safe_pred) - np.log(true)) ** 2).mean()))
    ratio = np.maximum(safe_pred / true, true / safe_pred)
    for k in (1, 2, 3):
        out[f"delta<1.25^{k}"] = float((ratio < 1.25**k).mean())
    return out


def higher_is_better(name: str) -> bool:
    return name.startswith(("ALP@", "delta<"))
