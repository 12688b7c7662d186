"""Detection quality of a run and the text quality it cost, as in Kirchenbauer et al. §6,
and its robustness to attacks, as in the reliability paper (Kirchenbauer et al. 2023b).

Positives are the watermarked completions; negatives are the human completions and the
model's unwatermarked completions of the same prompts. A text too short to score counts as
not detected (a positive missed, a negative correctly passed), never as nan.

Per attack and rate: TPR at the z threshold, ROC-AUC of the attacked texts against the human
completions, for the z-test and for WinMax, and TPR at a fixed FPR with each detector's
threshold calibrated on the human completions (WinMax's z is no calibrated z).
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

from workflow.common.errors import InputError
from workflow.common.metrics import RunEvaluation
from workflow.watermark.hf import load_lm
from workflow.watermark.records import read_attacked, read_generations, read_speed_record
from workflow.watermark.scoring import read_scores, whole_texts

log = logging.getLogger("lsai.watermark.evaluate")

HIGHER_IS_BETTER = {
    "tpr": True, "fpr_human": False, "fpr_plain": False, "auc": True, "tpr_at_1pct_fpr": True,
    "auc_winmax": True,
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


#: What the oracle makes of one completion: its perplexity and its mean last hidden state.
Read = tuple[float, torch.Tensor | None]


@torch.no_grad()
def read_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int | None = None,
) -> list[Read]:
    """Per completion, its perplexity given its prompt under ``model`` (the oracle LM) and the
    mean of the oracle's last hidden states over it (what ``similarity`` compares), in
    right-padded batches (default: 16 on a GPU; one at a time on a CPU, where the padding
    costs more than batching saves - 38 s against 30 s for a demo run's texts). The oracle
    tokenises both texts itself: it need not share the generator's tokenizer."""
    device = next(model.parameters()).device
    batch_size = batch_size or (16 if device.type == "cuda" else 1)
    limit = int(getattr(model.config, "n_positions", 0) or model.config.max_position_embeddings)
    rows = []  # (ids, number of completion tokens at the end), or None for an empty completion
    for prompt, completion in zip(prompts, completions, strict=True):
        context = tokenizer.encode(prompt, add_special_tokens=False)
        target = tokenizer.encode(completion, add_special_tokens=False)
        ids = (context + target)[-limit:]
        rows.append((ids, min(len(target), len(ids))) if target else None)
    out: list[Read] = [(math.nan, None)] * len(rows)
    todo = [i for i, row in enumerate(rows) if row is not None]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        width = max(len(rows[i][0]) for i in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(chunk):
            ids[r, : len(rows[i][0])] = torch.tensor(rows[i][0])
            mask[r, : len(rows[i][0])] = 1
        result = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       output_hidden_states=True)  # fmt: skip
        logits = result.logits.float().cpu()
        hidden = result.hidden_states[-1].float().cpu()
        for r, i in enumerate(chunk):
            n, k = len(rows[i][0]), rows[i][1]
            first = max(n - k, 1)  # a completion that is the whole window: its first unscored
            losses = torch.nn.functional.cross_entropy(
                logits[r, first - 1 : n - 1], ids[r, first:n], reduction="mean"
            )
            out[i] = (math.exp(float(losses)), hidden[r, n - k : n].mean(dim=0))
    return out


def perplexities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
) -> list[float]:
    """Perplexity of each completion given its prompt under the oracle (``read_texts``)."""
    return [ppl for ppl, _ in read_texts(model, tokenizer, prompts, completions)]


def similarity(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """Cosine of two texts' mean last hidden states under the oracle: 1 for the same text,
    lower as the meaning drifts. A stand-in for the reliability paper's P-SP, which needs a
    trained paraphrase encoder; NaN for an empty text."""
    if a is None or b is None:
        return math.nan
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def attack_quality(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    generations: Sequence[Mapping[str, Any]],
    attacked: Sequence[Mapping[str, Any]],
    clean: Mapping[str, Sequence[Read]],
) -> dict[tuple[str, float], dict[str, float]]:
    """Per (attack, rate), the oracle's mean perplexity of the attacked texts and their mean
    similarity to the watermarked text they came from (copy-paste: to the human text it was
    pasted into - the text a reader is given); ``clean``: ``read_texts`` of the ``marked`` and
    ``human`` completions, in the generations' order."""
    by_id = {g["id"]: g for g in generations}
    vectors = {text: {g["id"]: vec for g, (_, vec) in zip(generations, clean[text], strict=True)}
               for text in ("marked", "human")}  # fmt: skip
    read = read_texts(model, tokenizer, [by_id[a["id"]]["prompt"] for a in attacked],
                      [a["text"] for a in attacked])  # fmt: skip
    groups: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for a, (ppl, vec) in zip(attacked, read, strict=True):
        source = vectors["human" if a["attack"].startswith("copy_paste") else "marked"]
        key = (a["attack"], float(a["epsilon"]))
        groups.setdefault(key, []).append((ppl, similarity(vec, source[a["id"]])))
    return {key: {"ppl": _finite_mean([p for p, _ in values]),
                  "similarity": _finite_mean([s for _, s in values])}
            for key, values in groups.items()}  # fmt: skip


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(sum(finite) / len(finite)) if finite else math.nan


def _z(table: pd.DataFrame, text: str) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in table.loc[table.text == text, "z"]]


def calibrated_threshold(negatives: np.ndarray, fpr: float) -> float:
    """The lowest threshold that flags at most ``fpr`` of ``negatives`` (flagged: above it):
    the ``floor(fpr * n) + 1``-th largest negative score."""
    if not len(negatives):
        return math.inf
    allowed = int(math.floor(fpr * len(negatives)))
    ordered = np.sort(negatives)[::-1]
    return float(ordered[min(allowed, len(ordered) - 1)])


def run_metrics(
    table: pd.DataFrame, threshold: float, fpr: float = 0.01
) -> tuple[dict[str, float], dict[str, Any]]:
    """Clean detection metrics of a run's score table (``scoring.score_table``), and the curves
    the figures and report show: z vs T, and per attack and rate the TPR, mean z, AUC against
    human text (z and WinMax) and TPR at ``fpr`` with thresholds calibrated on human text."""
    whole = whole_texts(table)
    metrics = detection_metrics(
        _z(whole, "marked"), _z(whole, "plain"), _z(whole, "human"), threshold
    )
    marked = whole[whole.text == "marked"]
    negatives = whole[whole.text != "marked"]
    metrics["auc_winmax"] = auc(_finite(marked.winmax_z), _finite(negatives.winmax_z))
    clean = table[(table.attack == "none") & (table.text == "marked")]
    by_length = clean.groupby("length").z
    human = whole[whole.text == "human"]
    calibration = {
        "fpr": fpr,
        "z": calibrated_threshold(_finite(human.z), fpr),
        "winmax_z": calibrated_threshold(_finite(human.winmax_z), fpr),
    }
    curves: dict[str, Any] = {
        "z_vs_length": {int(n): {"z_mean": float(g.mean()), "tpr": float((g > threshold).mean())}
                        for n, g in by_length if len(g) == len(marked)},
        "attacks": {}, "calibration": calibration,
    }  # fmt: skip
    for name, group in table[table.text == "attacked"].groupby("attack"):
        # an edit rate of 0 is the clean watermarked text; a pasted fraction of 0 is human text
        curve = {} if name.startswith("copy_paste") else {0.0: _point(marked, human, threshold,
                                                                      calibration)}  # fmt: skip
        for epsilon, rows in group.groupby("epsilon"):
            curve[float(epsilon)] = _point(rows, human, threshold, calibration)
        curves["attacks"][name] = {str(k): v for k, v in sorted(curve.items())}
    return metrics, curves


def _finite(values: pd.Series) -> np.ndarray:
    """Scores with unscorable texts (NaN) below every finite one."""
    return values.fillna(-math.inf).to_numpy(dtype=np.float64)


def _point(
    rows: pd.DataFrame, human: pd.DataFrame, threshold: float, calibration: Mapping[str, float]
) -> dict[str, float]:
    """One attack rate: TPR and mean z (unscorable texts count as missed), and per detector
    (z, WinMax) the AUC against the human completions and the TPR at the calibrated FPR."""
    z = _finite(rows.z)
    point = {"tpr": float((z > threshold).mean()), "z_mean": float(rows.z.mean())}
    for column, label in (("z", ""), ("winmax_z", "_winmax")):
        scores = _finite(rows[column])
        point[f"auc{label}"] = auc(scores, _finite(human[column]))
        point[f"tpr_calibrated{label}"] = float((scores > calibration[column]).mean())
    return point


def clean_reads(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, generations: Sequence[dict]
) -> dict[str, list[Read]]:
    """``read_texts`` of the marked, plain and human completions, each given its prompt."""
    prompts = [g["prompt"] for g in generations]
    return {text: read_texts(model, tokenizer, prompts, [g[text] for g in generations])
            for text in ("marked", "plain", "human")}  # fmt: skip


def mean_perplexities(reads: Mapping[str, Sequence[Read]]) -> dict[str, float]:
    """``ppl_marked``, ``ppl_plain`` and ``ppl_human``: the oracle's mean perplexity of each
    kind of completion (``clean_reads``), over the texts where it is finite (NaN if none is)."""
    return {f"ppl_{text}": _finite_mean([ppl for ppl, _ in read]) for text, read in reads.items()}


def evaluate_stage(
    evaluation: RunEvaluation,
    scores: Path,
    generations: Path,
    detect: Mapping[str, Any],
    info: Path | None = None,
    oracle: Path | None = None,
    attacked: Sequence[Path] = (),
) -> dict:
    """The stage: detection metrics and attack curves of the detect stage's ``scores`` at
    ``detect``'s z threshold, the ``oracle``'s perplexities of the texts, with the generate
    stage's speed record (``info``), published; with ``attacked`` (the attack stages' files)
    and an oracle, each attack rate's perplexity and similarity to the original too."""
    table, texts = read_scores(scores), read_generations(generations)
    edited = read_attacked(attacked, {g["id"] for g in texts}) if attacked else []
    speed = read_speed_record(info) if info else {}
    threshold = float(detect["z_threshold"])
    metrics, curves = run_metrics(table, threshold, float(detect["calibration_fpr"]))
    if oracle:
        model, tokenizer = load_lm(oracle)
        reads = clean_reads(model, tokenizer, texts)  # read once: the means and the vectors
        metrics.update(mean_perplexities(reads))
        clean = {"ppl": metrics["ppl_marked"], "similarity": 1.0}
        quality_of = attack_quality(model, tokenizer, texts, edited, reads)
        for (name, epsilon), quality in quality_of.items():
            point = curves["attacks"].get(name, {}).get(str(epsilon))
            if point is None:
                raise InputError(attacked[0], f"{name} at rate {epsilon} is not in the score "
                                 f"table {scores}: give the files detect scored")  # fmt: skip
            point.update(quality)
        for name, curve in curves["attacks"].items():
            if "0.0" in curve and not name.startswith("copy_paste"):
                curve["0.0"].update(clean)  # rate 0: the watermarked text itself
    evaluation.publish(
        metrics, HIGHER_IS_BETTER, speed, curves=curves, z_threshold=threshold, texts=len(texts),
        generation=speed,
    )  # fmt: skip
    log.info("%s seed %d: %s", evaluation.experiment, evaluation.seed,
             ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))  # fmt: skip
    for name, curve in curves["attacks"].items():
        log.info("  %s: %s", name, ", ".join(
            f"eps {e}: TPR {p['tpr']:.2f} (z {p['z_mean']:.2f}), AUC {p['auc']:.3f}, "
            f"WinMax AUC {p['auc_winmax']:.3f}" for e, p in curve.items()))  # fmt: skip
    return metrics
