"""``distance_train``: fit one experiment x seed on the shared scaffold.

The two reference predictors need no training: their "checkpoint" holds the constant they use,
so every experiment goes through the same train -> evaluate rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from workflow.common.atomic import atomic_path
from workflow.common.target import RunTarget
from workflow.common.training import fit_and_publish, train_settings
from workflow.distance.data import DistanceDataModule, training_statistics
from workflow.distance.models import REFERENCES, network_class
from workflow.distance.store import PRIORS, object_table

log = logging.getLogger("lsai.distance.train")

MODEL_KEYS = ("backbone", "pretrained", "feature_layer", "roi_size", "box_features", "dropout")


def train_experiment(
    settings: Mapping[str, Any],
    train_store: Path,
    val_store: Path,
    target: RunTarget,
) -> None:
    model = settings["model"]
    if model in REFERENCES:
        state: dict[str, Any] = {"reference": model, "run_info": {"world_size": 1}}
        if model == "mean":
            state["mean"] = float(object_table(train_store)["distance"].mean())
        else:
            state["height"] = float(PRIORS[0])
        with atomic_path(target.final) as tmp:
            torch.save(state, tmp)
        log.info("reference predictor %s: %s", model, state)
        return
    stats = training_statistics(train_store)
    L.seed_everything(target.seed, workers=True, verbose=False)  # the initial weights depend on it
    network = network_class(model)
    frames = network.inputs == "frames"  # Zhu & Fang's backbone settings go to such a network
    extra = {k: settings[k] for k in MODEL_KEYS if k in settings} if frames else {}
    module = network(
        lr=settings["lr"], weight_decay=settings["weight_decay"], model=model, **stats, **extra
    )
    data = DistanceDataModule(
        model, train_store, val_store, settings["batch_size"], settings["num_workers"]
    )
    run = train_settings(settings, target, inputs=[train_store, val_store])
    fit_and_publish(module, data, run, target.final)
