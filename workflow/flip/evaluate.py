"""``flip_evaluate``: zero-shot and linear-probe accuracy of a trained FLIP model on an
ImageFolder val set (``val/<class>/*.jpg`` + ``classnames.txt``), with one prediction per image.

The probe is fit on a fixed stratified half of the val images and scored on the other half
(``probe_split`` seed 0: the same halves for every run), so runs compare on equal terms.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

from workflow.common.errors import Skips
from workflow.flip.data import image_folder, image_loader
from workflow.flip.model import image_transforms, tokenizer
from workflow.flip.train import load_module
from workflow.flip.zeroshot import (
    image_features,
    linear_probe,
    probe_split,
    topk_accuracy,
    zero_shot_classifier,
)

HIGHER_IS_BETTER = {"zeroshot_top1": True, "zeroshot_top5": True, "probe_top1": True}
PROBE_FRACTION = 0.5


def evaluate_checkpoint(
    checkpoint: str | PathLike[str],
    val_root: str | PathLike[str],
    policy: str = "fail",
    skips: Skips | None = None,
) -> tuple[dict[str, float], pd.DataFrame, dict[str, Any]]:
    """(metrics, per-image predictions, the model's settings) of ``final.ckpt`` on the val
    set under ``val_root``; a damaged val image follows ``policy`` (listed in ``skips``)."""
    module = load_module(checkpoint)
    _, transform = image_transforms(module.model)
    dataset, names = image_folder(val_root, transform, policy=policy, skips=skips)
    classifier = zero_shot_classifier(module.model, tokenizer(module.settings), names)
    features, labels = image_features(module.model, image_loader(dataset))
    logits = features @ classifier.float().cpu()
    top1, top5 = topk_accuracy(logits, labels)
    train, test = probe_split(labels, PROBE_FRACTION, seed=0)
    probe = linear_probe(features[train], labels[train], features[test], labels[test])
    predicted = logits.argmax(dim=1)
    root = Path(val_root)
    predictions = pd.DataFrame(
        {
            "image": [str(Path(path).relative_to(root)) for path, _ in dataset.samples],
            "label": [names[i] for i in labels.tolist()],
            "zero_shot": [names[i] for i in predicted.tolist()],
            "score": logits.max(dim=1).values.numpy(),
        }
    )
    metrics = {"zeroshot_top1": top1, "zeroshot_top5": top5, "probe_top1": probe}
    return metrics, predictions, dict(module.settings)
