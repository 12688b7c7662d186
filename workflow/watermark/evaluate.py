"""Detection quality of a run and the text quality it cost, as in Kirchenbauer et al. §6.

Positives are the watermarked completions; negatives are the human completions and the
model's unwatermarked completions of the same prompts. A text too short to score counts as
not detected (a positive missed, a negative correctly passed), never as nan.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import mannwhitneyu
from torchmetrics.functional.classification import binary_roc
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workflow.common.metrics import RunEvaluation
from workflow.watermark.hf import load_lm
from workflow.watermark.records import read_generations, read_speed_record
from workflow.watermark.scoring import read_scores, whole_texts

log = logging.getLogger("lsai.watermark.evaluate")

HIGHER_IS_BETTER = {
    "tpr": True, "fpr_human": False, "fpr_plain": False, "auc": True, "tpr_at_1pct_fpr": True,
    "ppl_marked": False, "ppl_plain": False, "ppl_human": False,
}  # fmt: skip


def _scores(z: Sequence[float | None]) -> np.ndarray:
    """z-scores with unscorable texts at -inf (below every threshold)."""
    return np.array([-math.inf if v is None else float(v) for v in z], dtype=np.float64)


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney U over all pairs (ties half), exact in float64:
    torchmetrics' float32 trapezoid gives 0.99999994 on perfectly separated sets of a few
    hundred. 0 without both classes."""
    if not len(positives) or not len(negatives):
        return 0.0
    return float(mannwhitneyu(positives, negatives).statistic) / (len(positives) * len(negatives))


def detection_metrics(
    marked: Sequence[float | None],
    plain: Sequence[float | None],
    human: Sequence[float | None],
    threshold: float = 4.0,
) -> dict[str, float]:
    """TPR at ``threshold`` (z above it, as the reference's ``z_score > z_threshold``),
    empirical FPR on human and plain text, ROC-AUC and TPR at 1% FPR (watermarked against all
    negatives)."""
    pos, neg_plain, neg_human = _scores(marked), _scores(plain), _scores(human)
    neg = np.concatenate([neg_plain, neg_human])
    scores = np.concatenate([pos, neg])
    floor = scores[np.isfinite(scores)].min() - 1 if np.isfinite(scores).any() else 0.0
    finite = np.where(np.isfinite(scores), scores, floor)
    preds = torch.from_numpy(finite)
    target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
    fpr, tpr, _ = binary_roc(preds, target, thresholds=None)
    within = fpr <= 0.01
    return {
        "tpr": float(np.mean(pos > threshold)),
        "fpr_human": float(np.mean(neg_human > threshold)),
        "fpr_plain": float(np.mean(neg_plain > threshold)),
        "auc": auc(finite[: len(pos)], finite[len(pos) :]),
        "tpr_at_1pct_fpr": float(tpr[within].max()) if within.any() else 0.0,
    }


@torch.no_grad()
def perplexities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
) -> list[float]:
    """Perplexity of each completion given its prompt under ``model`` (the oracle LM), which
    tokenises both texts itself: the oracle need not share the generator's tokenizer."""
    device = next(model.parameters()).device
    limit = int(getattr(model.config, "n_positions", 0) or model.config.max_position_embeddings)
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        context = tokenizer.encode(prompt, add_special_tokens=False)
        target = tokenizer.encode(completion, add_special_tokens=False)
        if not target:
            out.append(math.nan)
            continue
        ids = (context + target)[-limit:]
        labels = list(ids)
        scored = min(len(target), len(ids) - 1)
        labels[: len(ids) - scored] = [-100] * (len(ids) - scored)  # score the completion only
        loss = model(
            input_ids=torch.tensor([ids], device=device),
            labels=torch.tensor([labels], device=device),
        ).loss
        out.append(math.exp(float(loss)))
    return out


def _z(table: pd.DataFrame, text: str) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in table.loc[table.text == text, "z"]]


def run_metrics(table: pd.DataFrame, threshold: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Clean detection metrics of a run's score table (``scoring.score_table``), and the curves
    the figures and report show: z vs T and every attack's TPR and mean z per epsilon."""
    whole = whole_texts(table)
    metrics = detection_metrics(
        _z(whole, "marked"), _z(whole, "plain"), _z(whole, "human"), threshold
    )
    clean = table[(table.attack == "none") & (table.text == "marked")]
    by_length = clean.groupby("length").z
    curves: dict[str, Any] = {
        "z_vs_length": {int(n): {"z_mean": float(g.mean()), "tpr": float((g > threshold).mean())}
                        for n, g in by_length if len(g) == len(whole[whole.text == "marked"])},
        "attacks": {},
    }  # fmt: skip
    marked = whole[whole.text == "marked"]
    for name, group in table[table.text == "attacked"].groupby("attack"):
        # an edit rate of 0 is the clean watermarked text; a pasted fraction of 0 is human text
        curve = {} if name == "copy_paste" else {0.0: _point(marked, threshold)}
        for epsilon, rows in group.groupby("epsilon"):
            curve[float(epsilon)] = _point(rows, threshold)
        curves["attacks"][name] = {str(k): v for k, v in sorted(curve.items())}
    negatives = whole[whole.text != "marked"].window_z.dropna()
    curves["window_fpr"] = float((negatives > threshold).mean()) if len(negatives) else None
    return metrics, curves


def _point(rows: pd.DataFrame, threshold: float) -> dict[str, float]:
    """TPR and mean z of attacked texts (unscorable ones count as missed); the windowed
    detector's TPR where it ran (copy-paste)."""
    z = rows.z.fillna(-math.inf)
    point = {"tpr": float((z > threshold).mean()), "z_mean": float(rows.z.mean())}
    if rows.window_z.notna().any():
        point["window_tpr"] = float((rows.window_z.fillna(-math.inf) > threshold).mean())
    return point


def mean_perplexities(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, generations: Sequence[dict]
) -> dict[str, float]:
    """``ppl_marked``, ``ppl_plain`` and ``ppl_human``: the oracle's mean perplexity of each
    completion given its prompt, over the texts where it is finite (NaN if none is)."""
    prompts = [g["prompt"] for g in generations]
    means = {}
    for text in ("marked", "plain", "human"):
        ppl = perplexities(model, tokenizer, prompts, [g[text] for g in generations])
        finite = [p for p in ppl if math.isfinite(p)]
        means[f"ppl_{text}"] = float(sum(finite) / len(finite)) if finite else math.nan
    return means


def evaluate_stage(
    evaluation: RunEvaluation,
    scores: Path,
    generations: Path,
    detect: Mapping[str, Any],
    info: Path | None = None,
    oracle: Path | None = None,
) -> dict:
    """The stage: detection metrics and attack curves of the detect stage's ``scores`` at
    ``detect``'s z threshold, the ``oracle``'s perplexities of the texts, with the generate
    stage's speed record (``info``), published."""
    table, texts = read_scores(scores), read_generations(generations)
    speed = read_speed_record(info) if info else {}
    threshold = float(detect["z_threshold"])
    metrics, curves = run_metrics(table, threshold)
    if oracle:
        metrics.update(mean_perplexities(*load_lm(oracle), texts))
    evaluation.publish(
        metrics, HIGHER_IS_BETTER, speed, curves=curves, z_threshold=threshold, texts=len(texts),
        generation=speed,
    )  # fmt: skip
    log.info("%s seed %d: %s", evaluation.experiment, evaluation.seed,
             ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))  # fmt: skip
    for name, curve in curves["attacks"].items():
        log.info("  %s: %s", name, ", ".join(f"eps {e}: TPR {p['tpr']:.2f} (z {p['z_mean']:.2f})"
                                             for e, p in curve.items()))  # fmt: skip
    return metrics
