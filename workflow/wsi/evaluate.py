"""``wsi_evaluate``: slide probabilities, metrics and attention scores of one trained run, at
the decision threshold its training chose on the validation slides."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.common.metrics import RunEvaluation
from workflow.common.training import checkpoint_run_info
from workflow.wsi.graph import load_graph
from workflow.wsi.metrics import HIGHER_IS_BETTER, slide_metrics
from workflow.wsi.prepare import split_files
from workflow.wsi.train import load_module

log = logging.getLogger("lsai.wsi.evaluate")


def evaluate_stage(
    evaluation: RunEvaluation,
    checkpoint: Path,
    graphs: Path,
    attention: Path,
    lesions: Path | None = None,
) -> dict:
    """The stage: every test slide's probability (and its attention scores, to
    ``attention``), the metrics at the run's stored threshold, published; with the lesions
    stage's index also the FROC and the tile-level AUC of the attention maps
    (workflow/wsi/froc.py)."""
    run_info = checkpoint_run_info(checkpoint)
    threshold = stored_threshold(checkpoint, run_info)  # before the slides: fails fast
    predictions = predict_slides(checkpoint, split_files(graphs, "test"), attention)
    metrics = slide_metrics(
        predictions["label"].to_numpy(), predictions["prob"].to_numpy(), threshold
    )
    extra: dict[str, Any] = {}
    if lesions is not None:
        from workflow.wsi.froc import lesion_files_of, lesion_metrics

        probabilities = dict(zip(predictions["slide_id"], predictions["prob"], strict=True))
        found, extra = lesion_metrics(attention, probabilities, lesion_files_of(lesions))
        metrics.update(found)
        log.info("FROC %.3f, tile-level AUC %.3f", found["FROC"], found["tile_AUC"])
    evaluation.publish(
        metrics, {k: HIGHER_IS_BETTER[k] for k in metrics}, run_info, predictions,
        test_slides=len(predictions), threshold_rule=run_info.get("threshold_rule"), **extra,
    )  # fmt: skip
    log.info(
        "%s seed %d: AUC %.3f, ACC %.3f at threshold %.4f on %d test slides",
        evaluation.experiment, evaluation.seed, metrics["AUC"], metrics["ACC"], threshold,
        len(predictions),
    )  # fmt: skip
    return metrics


def stored_threshold(
    checkpoint: str | PathLike[str], run_info: Mapping[str, Any] | None = None
) -> float:
    """The decision threshold ``wsi_train`` chose on the validation slides and stored in the
    checkpoint's ``run_info`` (read from ``checkpoint`` unless given). There is no silent 0.5
    for a checkpoint without one: ACC and F1 at an unchosen cut say nothing about an
    uncalibrated model."""
    info = checkpoint_run_info(checkpoint) if run_info is None else run_info
    value = info.get("threshold")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InputError(
            checkpoint,
            f"no decision threshold in run_info (got {value!r}): it was not published by "
            "this wsi_train, which chooses one on the validation slides; train it again",
        )
    return float(value)


def predict_slides(
    checkpoint: str | PathLike[str], files: Sequence[str | PathLike[str]], attention: Path
) -> pd.DataFrame:
    """Per test slide: label and probability (returned) and its heatmap scores (``attention``:
    one HDF5 group per slide with the scored tiles' level-0 ``coords``, their ``footprint``
    and ``scores``)."""
    module = load_module(checkpoint)
    rows = []
    with atomic_path(attention) as tmp, h5py.File(tmp, "w") as h5, torch.inference_mode():
        for path in files:
            graph = load_graph(path)
            out = module.predict_step(graph, 0)
            nodes = out["nodes"].long()
            level = int(graph.level[nodes[0]]) if len(nodes) else len(graph.downsamples) - 1
            group = h5.create_group(out["slide_id"])
            group["coords"] = graph.coords[nodes].numpy()
            group["scores"] = out["attention"].numpy().astype(np.float32)
            # mil4wsi graphs carry tile-grid coordinates and no downsamples: one unit per tile
            group.attrs["footprint"] = (
                round(graph.downsamples[level] * graph.patch_size) if graph.downsamples else 1
            )
            group.attrs["magnification"] = graph.magnifications[level]
            group.attrs["label"] = out["label"]
            rows.append(
                {"slide_id": out["slide_id"], "label": out["label"], "prob": out["probability"]}
            )
    return pd.DataFrame(rows)
