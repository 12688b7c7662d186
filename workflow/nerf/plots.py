"""The NeRF track's figures: pose error against training step, and held-out renders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workflow.common.plotting import plt, save_figure


def pose_error_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], out: Path) -> None:
    """Rotation and translation error (after Sim(3) alignment) of each run, per step."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, history in sorted(histories.items()):
        rows = [h for h in history if "rotation_error_deg" in h]
        steps = [h["step"] for h in rows]
        axes[0].plot(steps, [h["rotation_error_deg"] for h in rows], marker="o", ms=3, label=name)
        axes[1].plot(steps, [h["translation_error"] for h in rows], marker="o", ms=3, label=name)
    axes[0].set(xlabel="step", ylabel="rotation error (deg)", title="training poses")
    axes[1].set(xlabel="step", ylabel="translation error (scene units)", title="training poses")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    save_figure(fig, out)


def renders_figure(pairs: Sequence[tuple[np.ndarray, np.ndarray]], out: Path, title: str) -> None:
    """Each held-out view: ground truth, render, and absolute error."""
    fig, axes = plt.subplots(len(pairs), 3, figsize=(6, 2 * len(pairs)), squeeze=False)
    for row, (truth, render) in zip(axes, pairs, strict=True):
        error = np.abs(truth - render).mean(-1)
        for ax, image, name in zip(
            row, (truth, render, error), ("truth", "render", "|error|"), strict=True
        ):
            ax.imshow(
                np.clip(image, 0, 1), cmap="magma" if image.ndim == 2 else None, vmin=0, vmax=1
            )
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, out)


def figures_stage(metrics: Sequence[Path], out: Path) -> None:
    """The figures stage: every run's pose error against training step (its metrics.json's
    ``extra.history``)."""
    from workflow.common.metrics import read_metrics

    histories = {}
    for path in metrics:
        record = read_metrics(path)
        name = f"{record['experiment']} s{record['seed']}"
        histories[name] = record.get("extra", {}).get("history", [])
    pose_error_figure(histories, out)
