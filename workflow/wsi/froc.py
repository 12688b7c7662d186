"""Lesion-level evaluation of attention maps: Camelyon16's FROC and a tile-level AUC.

FROC (the challenge's definition, written from its description): a detection is a level-0
point with a score. On a slide with lesions, a detection whose point falls in a lesion of the
evaluation mask (workflow/wsi/lesions.py) hits it, one outside every lesion is a false
positive, and one in an Isolated Tumour Cell cluster counts as neither; every detection on a
normal slide is a false positive. A lesion is found at threshold t when some detection hitting
it scores >= t. Over every distinct score t: average false positives per slide (over all
evaluated slides) and sensitivity (found lesions / lesions, ITCs left out). The FROC score is
the mean sensitivity at 0.25, 0.5, 1, 2, 4 and 8 false positives per slide, linearly
interpolated on the curve (the challenge's ``np.interp``). Where several operating points share
a false-positive rate the highest sensitivity stands (lowering the threshold to the next false
positive only adds hits); the challenge's code reads that vertical step from ``np.interp`` on
duplicate abscissae and skips its lowest distinct score.

Detections from attention (a choice, not the challenge's): the heatmap scale's tiles
(``attention.h5``), each scored ``slide probability x attention / the slide's highest
attention``, so that scores compare across slides and a slide called normal raises few false
positives; a tile is a detection, at its centre, when its score is positive and no 8-neighbour
on the tile grid scores higher (local maxima, so a lesion's plateau is one or a few points
rather than every tile around it).

Tile-level localisation AUC: over the heatmap-scale tiles of the annotated tumour test slides,
pooled (as CLAM-style papers report it), a tile's label from its tumour fraction
(``tile_tumor_fraction`` of the lesions stage) and its score the slide's attention / its
highest attention (the slide probability is left out: within tumour slides it only rescales).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from workflow.common.errors import InputError
from workflow.wsi.lesions import SlideLesions, read_lesions, tile_tumor_fraction
from workflow.wsi.metrics import slide_auc

log = logging.getLogger("lsai.wsi.froc")

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class SlideOutcome:
    """One slide's detections sorted out: false-positive scores and, per (non-ITC) lesion,
    the best score of a detection in it (-inf when none hit it)."""

    false_positives: np.ndarray
    lesion_scores: np.ndarray


def score_detections(
    points: np.ndarray,
    scores: np.ndarray,
    evaluation: np.ndarray | None,
    itc: Iterable[int] = (),
    downsample: float = 32,
) -> SlideOutcome:
    """``points`` (N, 2) level-0 (x, y); ``evaluation`` the slide's lesion labels at
    ``downsample`` (None or all zero: a normal slide)."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    scores = np.asarray(scores, np.float64).ravel()
    if evaluation is None or not evaluation.any():
        return SlideOutcome(scores, np.empty(0))
    h, w = evaluation.shape
    col = np.clip((points[:, 0] // downsample).astype(np.intp), 0, w - 1)
    row = np.clip((points[:, 1] // downsample).astype(np.intp), 0, h - 1)
    hit = evaluation[row, col]
    n = int(evaluation.max())
    best = np.full(n + 1, -np.inf)
    np.maximum.at(best, hit, scores)
    excluded = set(itc)
    keep = np.array([k not in excluded for k in range(1, n + 1)], bool)
    return SlideOutcome(scores[hit == 0], best[1:][keep])


def froc_curve(outcomes: Sequence[SlideOutcome]) -> tuple[np.ndarray, np.ndarray]:
    """(average false positives per slide, sensitivity) from (0, 0) through every distinct
    score as threshold, highest first; the highest sensitivity per false-positive rate."""
    if not outcomes:
        raise ValueError("no slide to evaluate")
    fps = np.concatenate([o.false_positives for o in outcomes])
    lesions = np.concatenate([o.lesion_scores for o in outcomes])
    if lesions.size == 0:
        raise ValueError("no lesion (beyond ITCs) on the evaluated slides")
    thresholds = np.unique(np.concatenate([fps, lesions[np.isfinite(lesions)]]))[::-1]
    fp_rate = (fps[None, :] >= thresholds[:, None]).sum(axis=1) / len(outcomes)
    sensitivity = (lesions[None, :] >= thresholds[:, None]).sum(axis=1) / lesions.size
    fp_rate = np.concatenate([[0.0], fp_rate])
    sensitivity = np.concatenate([[0.0], sensitivity])
    rates, first = np.unique(fp_rate, return_index=True)
    best = np.maximum.reduceat(sensitivity, first) if len(first) else sensitivity
    return rates, best


def froc_score(
    fp_rate: np.ndarray, sensitivity: np.ndarray, at: Sequence[float] = FP_RATES
) -> tuple[float, dict[float, float]]:
    """Mean sensitivity at the ``at`` false-positive rates (linear interpolation; beyond the
    curve's last point its sensitivity holds), and each of them."""
    values = np.interp(np.asarray(at, np.float64), fp_rate, sensitivity)
    return float(values.mean()), {float(a): float(v) for a, v in zip(at, values, strict=True)}


# --------------------------------------------------------------------------- from attention
def grid_local_maxima(coords: np.ndarray, scores: np.ndarray, stride: float) -> np.ndarray:
    """Boolean: tiles scoring > 0 that no 8-neighbour on the tile grid outscores."""
    coords = np.asarray(coords, np.float64).reshape(-1, 2)
    if len(coords) == 0:
        return np.zeros(0, bool)
    cells = np.rint((coords - coords.min(axis=0)) / stride).astype(np.intp) + 1
    grid = np.full(tuple(cells.max(axis=0)[::-1] + 2), -np.inf)
    grid[cells[:, 1], cells[:, 0]] = scores
    peak = ndimage.maximum_filter(grid, size=3, mode="constant", cval=-np.inf)
    return (scores > 0) & (scores >= peak[cells[:, 1], cells[:, 0]])


def detections(
    coords: np.ndarray, footprint: float, attention: np.ndarray, probability: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, scores) of one slide's local maxima (module docstring) and every tile's
    normalised attention."""
    attention = np.asarray(attention, np.float64).ravel()
    top = attention.max() if attention.size else 0.0
    relative = attention / top if top > 0 else np.zeros_like(attention)
    scores = float(probability) * relative
    peaks = grid_local_maxima(coords, scores, footprint)
    points = np.asarray(coords, np.float64).reshape(-1, 2)[peaks] + footprint / 2
    return points, scores[peaks], relative


def lesion_metrics(
    attention: str | PathLike[str],
    probabilities: Mapping[str, float],
    lesion_files: Mapping[str, str | PathLike[str]],
) -> tuple[dict[str, float], dict[str, object]]:
    """(metrics, details) of one run's test slides: ``FROC`` and ``tile_AUC``. ``attention``
    is the run's attention.h5, ``probabilities`` its slide probabilities, ``lesion_files``
    the lesions stage's file per slide; unannotated tumour slides are left out."""
    outcomes, labels, tile_scores = [], [], []
    left_out: list[str] = []
    with h5py.File(attention, "r") as h5:
        for slide_id, group in h5.items():
            if slide_id not in lesion_files:
                left_out.append(slide_id)
                continue
            lesions: SlideLesions = read_lesions(lesion_files[slide_id])
            if not lesions.annotated:
                left_out.append(slide_id)
                continue
            coords, footprint = group["coords"][()], float(group.attrs["footprint"])
            points, scores, relative = detections(
                coords, footprint, group["scores"][()], probabilities[slide_id]
            )
            outcomes.append(
                score_detections(
                    points, scores, lesions.evaluation, lesions.itc, lesions.downsample
                )
            )
            if lesions.mask.any():
                fraction = tile_tumor_fraction(lesions.mask, lesions.downsample, coords, footprint)
                labels.append(fraction >= lesions.tile_tumor_fraction)
                tile_scores.append(relative)
    if left_out:
        log.warning("lesion-level evaluation leaves out %d slide(s) without annotations: %s",
                    len(left_out), ", ".join(left_out[:5]))  # fmt: skip
    if not outcomes:
        raise InputError(attention, "no test slide has a lesions file to evaluate against")
    try:
        fp_rate, sensitivity = froc_curve(outcomes)
        froc, at = froc_score(fp_rate, sensitivity)
    except ValueError as err:
        log.warning("no FROC: %s", err)
        froc, at = float("nan"), {}
    tile_auc = (
        slide_auc(np.concatenate(labels).astype(int), np.concatenate(tile_scores))
        if labels else float("nan")
    )  # fmt: skip
    details = {
        "lesion_slides": len(outcomes),
        "lesions": int(sum(o.lesion_scores.size for o in outcomes)),
        "froc_sensitivity": {f"{k:g}": v for k, v in at.items()},
        "lesions_left_out": sorted(left_out),
    }
    return {"FROC": froc, "tile_AUC": tile_auc}, details


def lesion_files_of(index: str | PathLike[str]) -> dict[str, str]:
    """slide id -> lesions file, from the lesions stage's index."""
    from workflow.wsi.prepare import read_index

    table = read_index(Path(index))
    if "lesions" not in table.columns:
        raise InputError(index, "index lacks the lesions column")
    return dict(zip(table["slide_id"].astype(str), table["lesions"].astype(str), strict=True))
