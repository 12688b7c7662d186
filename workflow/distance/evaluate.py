"""``distance_evaluate``: predictions of a trained run on the test split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from workflow.common.metrics import RunEvaluation
from workflow.common.training import read_checkpoint
from workflow.distance.data import make_dataset, make_loader
from workflow.distance.metrics import distance_metrics, higher_is_better
from workflow.distance.models import load_network
from workflow.distance.store import object_table

log = logging.getLogger("lsai.distance.evaluate")


def evaluate_stage(evaluation: RunEvaluation, checkpoint_path: Path, store: Path) -> dict:
    """The stage: every test object's prediction, the metrics of them, both published."""
    checkpoint = read_checkpoint(checkpoint_path)
    predictions = predict(checkpoint, checkpoint_path, store)
    metrics = distance_metrics(
        predictions["distance"], predictions["prediction"], predictions["occlusion"]
    )
    evaluation.publish(
        metrics, {k: higher_is_better(k) for k in metrics}, checkpoint.get("run_info", {}),
        predictions, test_objects=len(predictions),
    )  # fmt: skip
    log.info(
        "%s seed %d: ALE %.3f m, AbsRel %.3f, delta<1.25 %.3f on %d objects",
        evaluation.experiment, evaluation.seed, metrics["ALE"], metrics["AbsRel"],
        metrics["delta<1.25^1"], len(predictions),
    )  # fmt: skip
    return metrics


def predict(
    checkpoint: dict[str, Any], checkpoint_path: Path, store: Path, batch_size: int = 8
) -> pd.DataFrame:
    """One row per test object: identity, truth, prediction, occlusion."""
    table = object_table(store)
    reference = checkpoint.get("reference")
    if reference == "mean":
        pred = np.full(len(table), checkpoint["mean"])
    elif reference == "pinhole":
        pred = table["fy"].to_numpy() * checkpoint["height"] / table["h"].to_numpy()
    else:
        pred = _network_predictions(
            load_network(checkpoint, checkpoint_path), store, len(table), batch_size
        )
    out = table[
        ["sequence", "frame", "ped_id", "distance", "occlusion", "visibility", "x", "y", "w", "h"]
    ].copy()
    out["prediction"] = pred
    return out


@torch.no_grad()
def _network_predictions(
    module: torch.nn.Module, store: Path, n: int, batch_size: int
) -> np.ndarray:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = module.to(device)
    model = module.hparams.model
    per_batch = batch_size if module.inputs == "frames" else 4096  # frames vs box rows
    loader = make_loader(model, make_dataset(model, store), per_batch, 0, shuffle=False)
    pred = np.full(n, np.nan)
    for batch in loader:
        moved = {
            k: (v.to(device) if torch.is_tensor(v) else [b.to(device) for b in v])
            for k, v in batch.items()
        }
        pred[batch["rows"].numpy()] = module(moved).float().cpu().numpy()
    if np.isnan(pred).any():
        raise RuntimeError("some objects received no prediction")
    return pred
