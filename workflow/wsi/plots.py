"""Figures of the WSI track: ROC curves per experiment (beside them the FROC curves where the
test slides carry lesion annotations), attention heatmaps per test slide."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from workflow.common.errors import InputError, first_line
from workflow.common.images import decode_image
from workflow.common.metrics import predictions_by_experiment, read_metrics
from workflow.common.plotting import plt, save_figure
from workflow.wsi.metrics import roc_curve

log = logging.getLogger("lsai.wsi.plots")


def froc_points(predictions: Sequence[Path]) -> dict[str, pd.DataFrame]:
    """Per experiment, each seed's sensitivity at the FROC's false-positive rates (from the
    ``metrics.json`` beside each predictions file); experiments without lesions are absent."""
    rows: dict[str, list[dict[str, float]]] = {}
    for path in predictions:
        record = read_metrics(Path(path).with_name("metrics.json"))
        at = record.get("extra", {}).get("froc_sensitivity")
        if at:
            rows.setdefault(record["experiment"], []).append({float(k): v for k, v in at.items()})
    return {name: pd.DataFrame(seeds) for name, seeds in rows.items()}


def roc_figure(
    predictions: Mapping[str, pd.DataFrame],
    path: Path,
    froc: Mapping[str, pd.DataFrame] | None = None,
) -> None:
    """One ROC curve per experiment over its test slides (seeds pooled), AUC in the legend;
    with ``froc``, a second panel: lesion sensitivity against false positives per slide (mean
    over seeds, FROC score in the legend)."""
    from workflow.wsi.metrics import slide_auc

    panels = 2 if froc else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5), squeeze=False)
    ax = axes[0, 0]
    for name, frame in sorted(predictions.items()):
        labels, probs = frame["label"].to_numpy(), frame["prob"].to_numpy()
        fpr, tpr = roc_curve(labels, probs)
        auc = slide_auc(labels, probs)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Slide-level ROC, test split")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if froc:
        ax = axes[0, 1]
        for name, seeds in sorted(froc.items()):
            rates = sorted(seeds.columns)
            mean = seeds[rates].mean(axis=0).to_numpy()
            ax.plot(rates, mean, marker="o", label=f"{name} (FROC {mean.mean():.3f})")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("average false positives per slide")
        ax.set_ylabel("lesion sensitivity")
        ax.set_title("Lesion-level FROC (Camelyon16), test split")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def _blank_canvas(
    coords: np.ndarray, footprint: int, longest: int = 1024
) -> tuple[np.ndarray, float]:
    """A white canvas covering the tiles, and its downsample."""
    extent = (coords.max(axis=0) + footprint) if len(coords) else np.array([footprint, footprint])
    downsample = max(1.0, float(extent.max()) / longest)
    width, height = (int(np.ceil(v / downsample)) for v in extent)
    return np.full((height, width, 3), 255, dtype=np.uint8), downsample


def heatmap_figure(
    thumbnail: np.ndarray | None,
    thumbnail_downsample: float,
    coords: np.ndarray,
    footprint: int,
    scores: np.ndarray,
    title: str,
    path: Path,
) -> None:
    """Tile scores (min-max scaled) painted over the slide's thumbnail at the tiles' places;
    on white, alone, when there is no thumbnail (graphs whose slides were never opened here,
    e.g. mil4wsi inputs)."""
    panels = 2 if thumbnail is not None else 1
    if thumbnail is None:
        thumbnail, thumbnail_downsample = _blank_canvas(coords, footprint)
    heat = np.full(thumbnail.shape[:2], np.nan, dtype=np.float32)
    span = np.ptp(scores) if len(scores) else 0.0
    scaled = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    size = max(1, round(footprint / thumbnail_downsample))
    for (x, y), value in zip(coords, scaled, strict=True):
        col, row = round(x / thumbnail_downsample), round(y / thumbnail_downsample)
        heat[row : row + size, col : col + size] = value
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5), squeeze=False)
    axes = axes[0]
    if panels == 2:
        axes[0].imshow(thumbnail)
        axes[0].set_title("thumbnail")
    axes[-1].imshow(thumbnail)
    shown = axes[-1].imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    axes[-1].set_title("attention")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[-1], fraction=0.046)
    fig.suptitle(title)
    save_figure(fig, path)


def attention_heatmaps(
    attention: Path, segments: pd.DataFrame | None, out_dir: Path, model: str
) -> int:
    """One ``<slide_id>.png`` per slide of an ``attention.h5`` (the test slides' attention
    at one magnification), over its thumbnail when the segmentation ``segments`` (index by
    ``slide_id``) has one; returns how many were drawn."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        h5 = h5py.File(attention, "r")
    except OSError as err:
        raise InputError(attention, f"not a readable attention file: {first_line(err)}") from None
    with h5:
        for slide_id, group in h5.items():
            thumbnail, downsample = None, 1.0
            if segments is not None:
                if slide_id not in segments.index:
                    raise InputError(attention, f"slide {slide_id} has no thumbnail in --segments")
                row = segments.loc[slide_id]
                thumbnail = np.asarray(decode_image(row["thumbnail"]))
                downsample = float(row["mask_downsample"])
            label = "tumor" if group.attrs["label"] else "normal"
            heatmap_figure(
                thumbnail, downsample, group["coords"][()], int(group.attrs["footprint"]),
                group["scores"][()],
                f"{slide_id} ({label}): {model} attention at x{group.attrs['magnification']:g}",
                out_dir / f"{slide_id}.png",
            )  # fmt: skip
        return len(h5)


def figures_stage(
    predictions: Sequence[Path], roc: Path, attention: Path, heatmaps: Path,
    segments: Path | None = None,
) -> None:  # fmt: skip
    """The figures stage: every run's ROC curve, and one run's attention heatmaps over the
    segment stage's thumbnails (on white without ``segments``)."""
    from workflow.wsi.prepare import read_index

    roc_figure(predictions_by_experiment(predictions), roc, froc_points(predictions))
    thumbnails = read_index(segments).set_index("slide_id") if segments else None
    model = attention.parent.parent.name  # <model>/seed<k>/attention.h5
    drawn = attention_heatmaps(attention, thumbnails, heatmaps, model)
    log.info("ROC -> %s; %d heatmaps -> %s", roc, drawn, heatmaps)
