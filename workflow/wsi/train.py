"""``wsi_train``: any WSI model as a LightningModule, slide graphs as a LightningDataModule,
both handed to the shared scaffold (:func:`workflow.common.training.fit`).

One slide per step, as the reference trains. Optimiser as in mil4wsi: Adam with betas
(0.5, 0.9), cosine annealing per epoch down to ``lr_min``. Validation logs ``val_loss`` and
``val_auc`` (slide-level AUROC), so checkpoints are selected on the validation split, not on
the test split as the reference code did. After the fit the selected checkpoint scores the
validation slides once more and the decision threshold chosen on them
(:func:`workflow.wsi.metrics.youden_threshold`) is published inside ``final.ckpt``'s
``run_info``, which the evaluation reads for ACC and F1.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from workflow.common.config import schema_defaults
from workflow.common.errors import InputError
from workflow.common.loaders import SplitDataModule
from workflow.common.target import RunTarget
from workflow.common.training import (
    FitResult,
    fit_and_publish,
    read_checkpoint,
    train_settings,
)
from workflow.wsi.graph import load_graph
from workflow.wsi.metrics import FALLBACK_THRESHOLD, youden_threshold
from workflow.wsi.models import build_model, probability

log = logging.getLogger("lsai.wsi.train")

#: Weight of the log loss in ``val_select``: small enough never to outweigh one AUC step.
SELECT_TIE_BREAK = 1e-4

#: The schema's defaults of ``wsi.train`` (config/schema/wsi.yaml $defs/wsi_train).
TRAIN_DEFAULTS: dict[str, Any] = schema_defaults("wsi_train")


class WSIModule(L.LightningModule):
    """Loss, optimiser, metrics and logging around a model from :func:`build_model`."""

    def __init__(self, settings: Mapping[str, Any], in_dim: int) -> None:
        super().__init__()
        self.save_hyperparameters({"settings": dict(settings), "in_dim": int(in_dim)})
        self.settings = {**TRAIN_DEFAULTS, **dict(settings)}
        self.model = build_model(self.settings, int(in_dim))
        self.val_auc = BinaryAUROC()
        self.val_nll = MeanMetric()
        # Node features are standardised with training-set statistics kept in the checkpoint:
        # a frozen encoder's raw outputs can be of any scale (a random-init CNN's are ~1e-3).
        self.register_buffer("feature_mean", torch.zeros(int(in_dim)))
        self.register_buffer("feature_std", torch.ones(int(in_dim)))

    def standardised(self, graph: Data) -> Data:
        out = copy.copy(graph)
        out.x = (graph.x - self.feature_mean) / self.feature_std
        return out

    def forward(self, graph: Data) -> dict[str, Any]:
        return self.model(self.standardised(graph))

    def _step(self, graph: Data, stage: str) -> tuple[dict[str, Any], torch.Tensor]:
        output = self(graph)
        terms = self.model.loss(output, graph)
        for name, value in terms.items():
            key = f"{stage}_loss" if name == "loss" else f"{stage}_{name}"
            self.log(
                key,
                value.detach().float(),
                on_step=False,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=1,
                sync_dist=stage != "train",
            )
        return output, terms["loss"]

    def training_step(self, graph: Data, _: int) -> torch.Tensor:
        return self._step(graph, "train")[1]

    def validation_step(self, graph: Data, _: int) -> torch.Tensor:
        output, loss = self._step(graph, "val")
        prob = probability(output).view(1)
        self.val_auc.update(prob, graph.y.view(1).long())
        self.val_nll.update(F.binary_cross_entropy(prob, graph.y.view(1).float()))
        return loss

    def on_validation_epoch_end(self) -> None:
        """``val_auc``, and ``val_select``: the AUC with ties broken by the slides' log loss.
        Several epochs often share the best AUC on a small validation split; the first of
        them is the least trained, its probabilities all near 0.5."""
        auc, nll = self.val_auc.compute(), self.val_nll.compute()
        self.val_auc.reset()
        self.val_nll.reset()
        self.log("val_auc", auc, prog_bar=True, sync_dist=True)
        self.log("val_nll", nll, sync_dist=True)
        self.log("val_select", auc - SELECT_TIE_BREAK * nll.clamp(max=10.0), sync_dist=True)

    def predict_step(self, graph: Data, _: int) -> dict[str, Any]:
        """Per slide: probability, label and the heatmap scores with their node indices."""
        output = self(graph)
        return {
            "slide_id": graph.slide_id,
            "label": int(graph.y.view(-1)[0]),
            "probability": float(probability(output).detach()),
            "nodes": output["nodes"].cpu(),
            "attention": output["attention"].detach().float().cpu(),
            "instance_logits": output["instance_logits"].detach().float().cpu(),
        }

    def configure_optimizers(self) -> dict[str, Any]:
        s = self.settings
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=float(s["lr"]),
            betas=tuple(float(b) for b in s["betas"]),
            weight_decay=float(s["weight_decay"]),
        )
        epochs = max(int(self.trainer.max_epochs or 1), 1) if self._trainer is not None else 1
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs, eta_min=float(s["lr_min"])
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "epoch"},
        }


class GraphDataset(Dataset):
    """Slide graph files, loaded on access (``cache`` keeps them in memory after the first
    epoch: worth it for small sets, not for hundreds of x20 slides)."""

    def __init__(self, files: Sequence[str | PathLike[str]], cache: bool = False) -> None:
        self.files = [Path(f) for f in files]
        self.cache = cache
        self._cached: dict[int, Data] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Data:
        if index in self._cached:
            return self._cached[index]
        graph = load_graph(self.files[index])
        if self.cache:
            self._cached[index] = graph
        return graph


def single(batch: list[Data]) -> Data:
    """Collate for one slide per batch: the slide graph itself."""
    if len(batch) != 1:
        raise ValueError(f"wsi models take one slide per batch, got {len(batch)}")
    return batch[0]


class GraphDataModule(SplitDataModule):
    """Train / validation slide graphs, one slide per batch."""

    def __init__(
        self,
        train_files: Sequence[str | PathLike[str]],
        val_files: Sequence[str | PathLike[str]],
        num_workers: int = 0,
        cache: bool = False,
    ) -> None:
        super().__init__(1, num_workers, single)
        if not train_files or not val_files:
            raise InputError(
                "graphs", f"need train and val slides, got {len(train_files)} / {len(val_files)}"
            )
        self.files = {"train": list(train_files), "val": list(val_files)}
        self.cache = cache

    def make_datasets(self) -> dict[str, GraphDataset]:
        return {split: GraphDataset(files, self.cache) for split, files in self.files.items()}


def feature_statistics(files: Sequence[str | PathLike[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation of the node features of ``files``."""
    total, total_sq, count = 0.0, 0.0, 0
    for path in files:
        x = load_graph(path).x.double()
        total, total_sq, count = total + x.sum(0), total_sq + (x * x).sum(0), count + len(x)
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return mean.float(), torch.where(std > 1e-12, std, torch.ones_like(std)).float()


def feature_dim(path: str | PathLike[str]) -> int:
    """Node feature width of a slide graph file (the model's ``in_dim``)."""
    return int(load_graph(path).x.shape[1])


def load_module(checkpoint: str | PathLike[str]) -> WSIModule:
    """A trained module from a Lightning checkpoint (``final.ckpt``), in eval mode."""
    state = read_checkpoint(checkpoint, "wsi model checkpoint")
    try:
        params = state["hyper_parameters"]
        module = WSIModule(params["settings"], params["in_dim"])
        module.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise InputError(checkpoint, f"not a wsi model checkpoint: {err}") from None
    return module.eval()


def slide_probabilities(
    module: WSIModule, files: Sequence[str | PathLike[str]]
) -> tuple[list[int], list[float]]:
    """(labels, probabilities) of ``files`` under a module in eval mode."""
    labels, probs = [], []
    with torch.inference_mode():
        for path in files:
            out = module.predict_step(load_graph(path), 0)
            labels.append(out["label"])
            probs.append(out["probability"])
    return labels, probs


def validation_threshold(
    checkpoint: str | PathLike[str], val_files: Sequence[str | PathLike[str]]
) -> dict[str, Any]:
    """``{"threshold", "threshold_rule"}`` for ``run_info``: Youden's J on the validation
    slides' probabilities under ``checkpoint``; where they hold one class (or one value),
    the documented fallback ``FALLBACK_THRESHOLD`` with the reason as its rule."""
    labels, probs = slide_probabilities(load_module(checkpoint), val_files)
    try:
        return {"threshold": youden_threshold(labels, probs), "threshold_rule": "youden_val"}
    except ValueError as err:
        log.warning("no threshold from the validation slides (%s): using %s", err,
                    FALLBACK_THRESHOLD)  # fmt: skip
        return {"threshold": FALLBACK_THRESHOLD, "threshold_rule": f"fallback: {err}"}


def train_experiment(
    settings: Mapping[str, Any],
    train_files: Sequence[str | PathLike[str]],
    val_files: Sequence[str | PathLike[str]],
    target: RunTarget,
    num_workers: int = 0,
    trainer_overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Fit one experiment x seed; select on ``settings['monitor']`` (``val_auc`` by default,
    else ``val_loss``) and publish the selected checkpoint to the target's ``final``."""
    monitor = settings.get("monitor", "val_auc")
    if monitor not in ("val_auc", "val_loss"):
        raise ValueError(f"monitor must be val_auc or val_loss, got {monitor!r}")
    L.seed_everything(target.seed, workers=True, verbose=False)  # the initial weights too
    module = WSIModule(settings, feature_dim(train_files[0]))
    mean, std = feature_statistics(train_files)
    module.feature_mean.copy_(mean)
    module.feature_std.copy_(std)
    data = GraphDataModule(
        train_files, val_files, num_workers=num_workers, cache=bool(settings.get("cache", False))
    )
    run = train_settings(
        settings, target, inputs=[*train_files, *val_files], trainer_overrides=trainer_overrides,
        monitor="val_select" if monitor == "val_auc" else monitor,
        mode="max" if monitor == "val_auc" else "min",
        batch_size=settings.get("batch_size") or 1,  # one slide a step
    )  # fmt: skip

    def threshold(result: FitResult) -> dict[str, Any]:
        chosen = validation_threshold(result.best_checkpoint, val_files)
        log.info("threshold %.4f (%s)", chosen["threshold"], chosen["threshold_rule"])
        return {"monitor": monitor, **chosen}

    return fit_and_publish(module, data, run, target.final, threshold)
