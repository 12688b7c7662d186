"""``distance_train``: fit one experiment x seed on the shared scaffold.

The two reference predictors need no training: their "checkpoint" holds the constant they use,
so every experiment goes through the same train -> evaluate rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from workflow.common.atomic import atomic_path
from workflow.common.training import TrainSettings, budget, fit, publish_run, run_key
from workflow.distance.data import DistanceDataModule, training_statistics
from workflow.distance.models import NETWORKS, REFERENCES
from workflow.distance.store import PRIORS, object_table

log = logging.getLogger("lsai.distance.train")

MODEL_KEYS = ("backbone", "pretrained", "feature_layer", "roi_size", "box_features", "dropout")


def train_experiment(
    settings: Mapping[str, Any],
    train_store: Path,
    val_store: Path,
    run_dir: Path,
    final: Path,
    seed: int,
    gpus: int = 0,
    num_nodes: int = 1,
) -> None:
    model = settings["model"]
    if model in REFERENCES:
        state: dict[str, Any] = {"reference": model, "run_info": {"world_size": 1}}
        if model == "mean":
            state["mean"] = float(object_table(train_store)["distance"].mean())
        else:
            state["height"] = float(PRIORS[0])
        with atomic_path(final) as tmp:
            torch.save(state, tmp)
        log.info("reference predictor %s: %s", model, state)
        return
    stats = training_statistics(train_store)
    extra = {k: settings[k] for k in MODEL_KEYS if k in settings} if model == "zhu" else {}
    module = NETWORKS[model](
        lr=settings["lr"], weight_decay=settings["weight_decay"], model=model, **stats, **extra
    )
    data = DistanceDataModule(
        model, train_store, val_store, settings["batch_size"], settings["num_workers"]
    )
    result = fit(
        module,
        data,
        TrainSettings(
            run_dir=run_dir,
            max_epochs=settings["max_epochs"],
            seed=seed,
            gpus=gpus,
            num_nodes=num_nodes,
            monitor="val_loss",
            mode="min",
            key=run_key(settings, [train_store, val_store]),
            **budget(settings),
        ),
    )
    if result.is_global_zero:
        publish_run(result, final, seed)
        log.info("selected %s (best val_loss) -> %s", result.best_checkpoint.name, final)
