"""The watermark figures of one dataset, every experiment side by side (first seed of each).

Detection (z histograms and ROC: are watermarked and other texts apart?), power (z vs the
number of scored tokens T), robustness (TPR and mean z vs attack rate) and the detectors
under attack (AUC of the z-test and of WinMax vs attack rate, and its table).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_roc

from workflow.common.plotting import plt, save_figure
from workflow.watermark.scoring import whole_texts

COLOURS = {"marked": "tab:green", "plain": "tab:blue", "human": "tab:grey"}


def detection_figure(tables: Mapping[str, pd.DataFrame], threshold: float, path: Path) -> None:
    """Per experiment, z histograms of the three kinds of text; last panel, their ROC curves
    (watermarked against plain and human)."""
    fig, axes = plt.subplots(1, len(tables) + 1, figsize=(3.4 * (len(tables) + 1), 3.2))
    axes = np.atleast_1d(axes)
    roc = axes[-1]
    for ax, (name, table) in zip(axes, tables.items(), strict=False):
        whole = whole_texts(table)
        finite = whole.z.dropna()
        bins = np.linspace(min(finite.min(), -4), max(finite.max(), threshold + 1), 40)
        for text, colour in COLOURS.items():
            ax.hist(whole.loc[whole.text == text, "z"].dropna(), bins=bins, alpha=0.6,
                    color=colour, label=text)  # fmt: skip
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("z")
        pos = torch.tensor(whole.loc[whole.text == "marked", "z"].fillna(-1e9).to_numpy())
        neg = torch.tensor(whole.loc[whole.text != "marked", "z"].fillna(-1e9).to_numpy())
        target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
        fpr, tpr, _ = binary_roc(torch.cat([pos, neg]), target, thresholds=None)
        roc.plot(fpr.numpy(), tpr.numpy(), label=name)
    axes[0].set_ylabel("texts")
    axes[0].legend(fontsize=8)
    roc.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    roc.set_xscale("symlog", linthresh=0.01)
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title("ROC", fontsize=9)
    roc.legend(fontsize=7)
    fig.suptitle("Watermark detection: z-scores of the completions")
    fig.tight_layout()
    save_figure(fig, path)


def length_figure(curves: Mapping[str, Mapping[str, Any]], threshold: float, path: Path) -> None:
    """Mean z of the watermarked completions vs the tokens scored (z grows like sqrt(T))."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for name, curve in curves.items():
        points = sorted((int(n), v["z_mean"]) for n, v in curve["z_vs_length"].items())
        ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"z = {threshold:g}")
    ax.set_xlabel("tokens scored (T)")
    ax.set_ylabel("mean z, watermarked")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _panels(curves: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], Any, np.ndarray]:
    """The attacks of all runs, and one axis per attack."""
    attacks = sorted({a for c in curves.values() for a in c["attacks"]})
    fig, axes = plt.subplots(1, max(len(attacks), 1), figsize=(3.4 * max(len(attacks), 1), 3.2))
    return attacks, fig, np.atleast_1d(axes)


def _rate_label(attack: str) -> str:
    return "pasted fraction per span" if attack.startswith("copy_paste") else "edit rate epsilon"


def _series(
    curves: Mapping[str, Mapping[str, Any]], attack: str
) -> Iterator[tuple[str, str, list[float], list[dict[str, float]]]]:
    """Per run: its colour, name, and the rates and points of its ``attack`` curve."""
    for i, (name, curve) in enumerate(curves.items()):
        points = curve["attacks"].get(attack, {})
        yield f"C{i}", name, [float(e) for e in points], list(points.values())


def _finish(fig: Any, axes: np.ndarray, ylabel: str, title: str, path: Path) -> None:
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def attack_figure(curves: Mapping[str, Mapping[str, Any]], threshold: float, path: Path) -> None:
    """Per attack, TPR at the threshold (solid) and mean z (dashed, right axis) vs epsilon."""
    attacks, fig, axes = _panels(curves)
    for ax, attack in zip(axes, attacks, strict=False):
        zax = ax.twinx()
        for colour, name, eps, points in _series(curves, attack):
            ax.plot(eps, [p["tpr"] for p in points], marker="o", color=colour, label=name)
            zax.plot(eps, [p["z_mean"] for p in points], ls="--", color=colour)
        zax.axhline(threshold, color="k", lw=0.8, ls=":")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(_rate_label(attack))
        ax.set_title(attack, fontsize=9)
        zax.set_ylabel("mean z (dashed)", fontsize=8)
    _finish(fig, axes, f"TPR at z = {threshold:g}", "Robustness: detection after attacks", path)


def detector_figure(curves: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Per attack, ROC-AUC against human text of the z-test (solid) and WinMax (dashed)."""
    attacks, fig, axes = _panels(curves)
    for ax, attack in zip(axes, attacks, strict=False):
        for colour, name, eps, points in _series(curves, attack):
            ax.plot(eps, [p["auc"] for p in points], marker="o", color=colour, label=f"{name} z")
            ax.plot(eps, [p["auc_winmax"] for p in points], marker="s", ls="--", color=colour,
                    label=f"{name} WinMax")  # fmt: skip
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0.4, 1.02)
        ax.set_xlabel(_rate_label(attack))
        ax.set_title(attack, fontsize=9)
    _finish(fig, axes, "ROC-AUC vs human text",
            "Detectors under attack: z-test (solid) and WinMax (dashed)", path)  # fmt: skip


def quality_figure(curves: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Per attack, what it costs the text: the oracle's similarity to the original (solid) and
    perplexity (dashed, right axis) vs epsilon - quality against detectability, beside
    attacks.png."""
    attacks, fig, axes = _panels(curves)
    for ax, attack in zip(axes, attacks, strict=False):
        pax = ax.twinx()
        for colour, name, eps, points in _series(curves, attack):
            ax.plot(eps, [p.get("similarity", np.nan) for p in points], marker="o", color=colour,
                    label=name)  # fmt: skip
            pax.plot(eps, [p.get("ppl", np.nan) for p in points], ls="--", color=colour)
        ax.set_xlabel(_rate_label(attack))
        ax.set_title(attack, fontsize=9)
        pax.set_ylabel("oracle perplexity (dashed)", fontsize=8)
    _finish(
        fig,
        axes,
        "similarity to the original",
        "What an attack costs the text: similarity and perplexity under the oracle",
        path,
    )


def detector_table(curves: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The AUC table: a row per run, attack and rate; AUC and calibrated TPR of both
    detectors, and the attacked texts' perplexity and similarity (NaN without an oracle)."""
    rows = [
        {"experiment": name, "attack": attack, "epsilon": float(eps), "tpr": p["tpr"],
         "auc_z": p["auc"], "auc_winmax": p["auc_winmax"],
         "tpr_calibrated_z": p["tpr_calibrated"],
         "tpr_calibrated_winmax": p["tpr_calibrated_winmax"],
         "ppl": p.get("ppl", np.nan), "similarity": p.get("similarity", np.nan)}
        for name, curve in curves.items()
        for attack, points in sorted(curve["attacks"].items())
        for eps, p in points.items()
    ]  # fmt: skip
    return pd.DataFrame(rows).round(4)
