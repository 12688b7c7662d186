"""``flip_evaluate``: zero-shot and linear-probe accuracy of a trained FLIP model, with one
zero-shot prediction per val image, on a GPU when there is one (CPU on the demo).

Data: ``<root>/val/<class>/*`` (ImageFolder) and a train split (default ``<root>/train``, the
same class folders), as ImageNet's ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``.

- Zero-shot (CLIP / FLIP protocol): class names from ``classnames.txt`` or open_clip's ImageNet
  names (sorted-wnid order, checked), prompt templates ``openai`` (80), ``simple`` or ``own``;
  top-1 and top-5 on val.
- Linear probe: softmax regression on the frozen *train* features, its L2 strength chosen by a
  log-grid sweep on a stratified held-out part of the train features (``probe_holdout``), then
  refit on all train features and scored on val. CLIP's paper sweeps with scikit-learn's
  L-BFGS on raw features; here torch's L-BFGS on standardised features (same model family).

Image features of both splits are cached (workflow/flip/eval_data.py) so a rerun does not
encode them again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workflow.common.atomic import write_text
from workflow.common.config import schema_defaults
from workflow.common.errors import InputError, Skips
from workflow.common.metrics import RunEvaluation
from workflow.common.training import checkpoint_run_info
from workflow.flip.eval_data import (
    autocast,
    check_same_classes,
    default_train_folder,
    list_split,
    split_features,
)
from workflow.flip.model import image_tower_gflops, image_transforms, tokenizer
from workflow.flip.train import load_module
from workflow.flip.zeroshot import (
    fit_probe,
    l2_grid,
    sweep_l2,
    template_set,
    topk_accuracy,
    zero_shot_classifier,
    zeroshot_classnames,
)

log = logging.getLogger("lsai.flip.evaluate")

#: ``image_gflops``: the pre-training image tower's GFLOPs per sample and step (forward and
#: backward at the run's mask ratio; workflow/flip/model.py), the cost that masking cuts.
HIGHER_IS_BETTER = {
    "zeroshot_top1": True, "zeroshot_top5": True, "probe_top1": True, "image_gflops": False,
}  # fmt: skip
#: The schema's defaults of ``flip.evaluate`` and of a dataset's ``zeroshot``.
EVALUATE_DEFAULTS: dict[str, Any] = schema_defaults("flip_evaluate")
ZEROSHOT_DEFAULTS: dict[str, Any] = schema_defaults("flip_zeroshot")


@dataclass
class Evaluation:
    """What ``flip_evaluate`` writes: the metrics, the per-image predictions, the model's
    settings and the protocol's details (chosen L2, templates, split sizes) for ``extra``."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def evaluation_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else CUDA when there is a GPU, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise InputError("--device", str(err)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"{device} asked for, but CUDA is not available here")
    return device


def evaluate_run(
    checkpoint: str | PathLike[str],
    val_root: str | PathLike[str],
    train_dir: str | PathLike[str] | None = None,
    zeroshot: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    policy: str = "fail",
    val_skips: Skips | None = None,
    train_skips: Skips | None = None,
    cache_dir: str | PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> Evaluation:
    """Zero-shot and linear-probe evaluation of ``final.ckpt`` (module docstring).

    ``zeroshot``: the dataset's ``zeroshot`` section; ``settings``: the ``flip.evaluate``
    section; ``cache_dir``: where features are cached (None: not cached). Damaged images
    follow ``policy`` and are listed in ``val_skips`` / ``train_skips``.
    """
    s = {**EVALUATE_DEFAULTS, **(settings or {})}
    zs = {**ZEROSHOT_DEFAULTS, **(zeroshot or {})}
    module = load_module(checkpoint)
    device = evaluation_device(device)
    model = module.model.to(device).eval()
    amp = bool(s["amp"]) and device.type == "cuda"
    _, transform = image_transforms(model)
    val = list_split(Path(val_root) / "val", "val")
    train = list_split(train_dir or default_train_folder(val_root), "train")
    check_same_classes(train, val)
    names = zeroshot_classnames(zs["classnames"], val.classes, val_root)
    templates = template_set(zs["templates"])
    log.info(
        "%s on %s: %d classes (names: %s), %d templates (%s); %d val, %d train images",
        module.settings["model"], device, len(names), zs["classnames"], len(templates),
        zs["templates"], len(val.samples), len(train.samples),
    )  # fmt: skip

    started = time.monotonic()
    with autocast(device, amp):
        classifier = zero_shot_classifier(model, tokenizer(module.settings), names, templates)
    classifier = classifier.float().cpu()
    log.info("zero-shot classifier in %.1f s", time.monotonic() - started)

    how = {"model": module.settings["model"], "amp": amp, "preprocess": model.visual.preprocess_cfg}
    common = dict(
        checkpoint=checkpoint, how=how, cache_dir=cache_dir, policy=policy,
        batch_size=int(s["batch_size"]), num_workers=int(s["num_workers"]), amp=amp,
    )  # fmt: skip
    val_f = split_features(model, val, transform, skips=val_skips, **common)
    train_f = split_features(model, train, transform, skips=train_skips, **common)

    logits = val_f.features @ classifier
    top1, top5 = topk_accuracy(logits, val_f.labels)

    started = time.monotonic()
    grid = l2_grid(float(s["probe_l2_min"]), float(s["probe_l2_max"]), int(s["probe_l2_steps"]))
    sweep = sweep_l2(
        train_f.features, train_f.labels, grid, len(names), holdout=float(s["probe_holdout"]),
        seed=int(s["probe_seed"]), max_iter=int(s["probe_max_iter"]), device=device,
    )  # fmt: skip
    probe = fit_probe(
        train_f.features, train_f.labels, sweep.chosen, len(names), int(s["probe_max_iter"]),
        init=sweep.best, device=device,
    )  # fmt: skip
    probe_top1, _ = probe.score(val_f.features, val_f.labels)
    log.info(
        "linear probe: l2 %.3g chosen on %d held-out of %d train features (grid of %d), "
        "val top-1 %.4f; %.1f s", sweep.chosen, sweep.held_out_rows, len(train_f.features),
        len(grid), probe_top1, time.monotonic() - started,
    )  # fmt: skip

    predicted = logits.argmax(dim=1)
    predictions = pd.DataFrame(
        {
            "image": [val.item(val.samples[i][0]) for i in val_f.index.tolist()],
            "label": [names[i] for i in val_f.labels.tolist()],
            "zero_shot": [names[i] for i in predicted.tolist()],
            "score": logits.max(dim=1).values.numpy(),
        }
    )
    metrics = {"zeroshot_top1": top1, "zeroshot_top5": top5, "probe_top1": probe_top1}
    extra = {
        "classes": len(names),
        "classnames": zs["classnames"],
        "templates": len(templates),
        "template_set": zs["templates"],
        "train_images": len(train_f.features),
        "train_skipped": len(train_f.skipped),
        "probe_l2": sweep.chosen,
        "probe_l2_grid": sweep.grid,
        "probe_holdout_top1": sweep.accuracy,
        "probe_holdout_images": sweep.held_out_rows,
        "eval_device": str(device),
        "feature_cache": {"val": val_f.cached, "train": train_f.cached},
    }
    return Evaluation(metrics, predictions, dict(module.settings), extra)


def evaluate_checkpoint(
    checkpoint: str | PathLike[str],
    val_root: str | PathLike[str],
    policy: str = "fail",
    skips: Skips | None = None,
    **options: Any,
) -> tuple[dict[str, float], pd.DataFrame, dict[str, Any]]:
    """(metrics, per-image predictions, the model's settings) of :func:`evaluate_run`;
    ``skips`` lists the damaged val images, ``options`` go to :func:`evaluate_run`."""
    result = evaluate_run(checkpoint, val_root, policy=policy, val_skips=skips, **options)
    return result.metrics, result.predictions, result.settings


def evaluate_stage(
    evaluation: RunEvaluation,
    checkpoint: Path,
    pretrained: Path,
    val_root: Path,
    *,
    skipped: Path | None = None,
    train_skipped: Path | None = None,
    **options: Any,
) -> dict:
    """The stage: :func:`evaluate_run` of the tuned ``checkpoint`` (``options`` go to it),
    published with the masked phase's cost (``pretrained``: its images/s; the tuning phase
    runs unmasked in every experiment) and both phases' training time; the damaged images
    skipped are listed in ``skipped`` and ``train_skipped``."""
    val_skips, train_skips = Skips(), Skips()
    result = evaluate_run(
        checkpoint, val_root, val_skips=val_skips, train_skips=train_skips, **options
    )
    settings, predictions, extra = evaluation.settings, result.predictions, result.extra
    metrics = {**result.metrics, "image_gflops": image_tower_gflops(settings)}
    for path, skips in ((skipped, val_skips), (train_skipped, train_skips)):
        if path:
            write_text(path, skips.to_tsv())
    pretrain, tune = checkpoint_run_info(pretrained), checkpoint_run_info(checkpoint)
    wall = sum(float(info.get("train_wall_time_s", 0.0)) for info in (pretrain, tune))
    images_per_s = float(pretrain.get("images_per_s", 0.0))
    mask_ratio = float(settings["mask_ratio"])  # stage_settings filled in the default
    evaluation.publish(
        metrics, HIGHER_IS_BETTER, {**tune, "train_wall_time_s": wall}, predictions,
        mask_ratio=mask_ratio, loss=str(settings.get("loss", "clip")),
        images_per_s=images_per_s, val_images=len(predictions),
        val_skipped=len(val_skips), model=settings.get("model"),
        evaluate=options.get("settings"), zeroshot=options.get("zeroshot"), **extra,
    )  # fmt: skip
    log.info(
        "%s seed %d (mask %.2f): zero-shot top-1 %.3f, top-5 %.3f (%d templates) on %d val "
        "images; linear probe %.3f (l2 %.3g, %d train images); pre-training %.1f images/s, "
        "image tower %.4g GFLOPs per sample",
        evaluation.experiment, evaluation.seed, mask_ratio, metrics["zeroshot_top1"],
        metrics["zeroshot_top5"], extra["templates"], len(predictions), metrics["probe_top1"],
        extra["probe_l2"], extra["train_images"], images_per_s, metrics["image_gflops"],
    )  # fmt: skip
    return metrics
