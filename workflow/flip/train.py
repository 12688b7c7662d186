"""FLIP pre-training (and unmasked tuning) as a LightningModule on the shared scaffold.

Loss: the experiment's ``loss`` (workflow/flip/loss.py): by default CLIP's symmetric InfoNCE
with a learnable temperature (open_clip's ``ClipLoss``; under DDP the features of all ranks
are gathered, ``local_loss`` / ``gather_with_grad`` as open_clip's flags), or a plug-in
variant that adds a term of its own; ``val_loss`` (checkpoint selection) is the plain CLIP
loss in every experiment, so runs stay comparable. The logit scale is clamped to ln(100)
after every step, as CLIP.
Optimiser: AdamW, betas (0.9, 0.95), weight decay on weight matrices only (not on biases,
norms, embeddings of ndim < 2 or the logit scale, as open_clip), cosine decay to 0 after a
linear warm-up of ``warmup_steps``. ``lr`` is the peak; ``base_lr`` instead scales it by the
global batch / 256 as the paper does (4e-6 per 256 samples at batch 64k).

Unmasked tuning is a second run with ``mask_ratio`` 0, started from the first run's weights
via ``init_checkpoint`` (the optimiser starts fresh), with its own lr and length as the paper:
a hundredth of pre-training's lr (base lr 4e-8 vs 4e-6 per 256) for about a third of an epoch
(``epoch_fraction`` 0.32 -> ``max_samples``); see :func:`tune_settings`. Tuning trains with
the experiment's loss too: the objective is the experiment's, in both phases.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
import time
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import lightning as L
import torch

from workflow.common.config import ConfigError
from workflow.common.errors import InputError
from workflow.common.optim import adamw_warmup_cosine
from workflow.common.schedule import warmup_steps
from workflow.common.target import RunTarget
from workflow.common.training import (
    FitResult,
    fit_and_publish,
    read_checkpoint,
    train_settings,
)
from workflow.flip.data import ShardDataModule
from workflow.flip.loss import FlipLoss, loss_class
from workflow.flip.model import DEFAULTS, build_clip, image_transforms, model_settings, tokenizer

log = logging.getLogger("lsai.flip.train")

#: AdamW's betas and eps: constants of the recipe, not settings.
BETAS = (0.9, 0.95)
EPS = 1e-6
#: CLIP's cap on the logit scale (temperature 0.01).
MAX_LOGIT_SCALE = math.log(100.0)
#: Tuning's peak lr over pre-training's when the tune section names none (FLIP: 4e-8 / 4e-6).
TUNE_LR_FRACTION = 0.01
#: The tune keys that set its lr: one at most.
TUNE_LR_KEYS = ("lr", "base_lr", "lr_fraction")
#: Pre-training's keys that never carry over into tuning (its length, lr and warm-up).
NOT_INHERITED = ("lr", "base_lr", "max_epochs", "max_steps", "max_samples", "epoch_fraction",
                 "warmup_steps", "warmup_fraction")  # fmt: skip


def peak_lr(settings: Mapping[str, Any], world_size: int) -> float:
    """The peak lr: ``base_lr`` x global batch / 256 when set (the paper's rule), else ``lr``."""
    if settings.get("base_lr"):
        batch = int(settings.get("batch_size", 256)) * int(world_size)
        return float(settings["base_lr"]) * batch / 256
    return float(settings.get("lr", DEFAULTS["lr"]))


def sample_budget(settings: Mapping[str, Any], train_samples: int) -> dict[str, Any]:
    """``settings`` with ``epoch_fraction`` turned into ``max_samples`` (the smaller of the two
    when both are set) and enough epochs to reach it."""
    fraction = settings.get("epoch_fraction")
    if not fraction:
        return dict(settings)
    samples = max(math.ceil(float(fraction) * train_samples), 1)
    if settings.get("max_samples"):
        samples = min(samples, int(settings["max_samples"]))
    epochs = max(int(settings.get("max_epochs", 1)), math.ceil(float(fraction)))
    return {**settings, "max_samples": samples, "max_epochs": epochs}


class FlipModule(L.LightningModule):
    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"settings": dict(settings)})
        self.settings = {**DEFAULTS, **model_settings(settings)}
        self.model = build_clip(self.settings)
        self.loss_class = loss_class(self.settings["loss"])  # a variant: InputError names its file
        self.train_criterion = self.loss_class()
        # the plain CLIP loss for every experiment (checkpoint selection stays comparable),
        # per rank on the whole val set: world-size free
        self.val_criterion = FlipLoss()
        self._batch_started: float | None = None
        self.images_trained, self.step_seconds = 0, 0.0  # this process's throughput

    def images_per_s(self) -> float:
        """Training images per second of step time (all ranks; data waits excluded)."""
        world = self.trainer.world_size if self._trainer is not None else 1
        return world * self.images_trained / self.step_seconds if self.step_seconds else 0.0

    def setup(self, stage: str) -> None:
        """The training loss gathers over ranks: rank and world size from the trainer."""
        trainer = self.trainer
        self.train_criterion = self.loss_class(
            local_loss=bool(self.settings["local_loss"]),
            gather_with_grad=bool(self.settings["gather_with_grad"]),
            cache_labels=True,
            rank=int(trainer.global_rank),
            world_size=int(trainer.world_size),
        )

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images, tokens)

    def loss_terms(
        self, batch: Sequence[torch.Tensor], criterion: FlipLoss
    ) -> dict[str, torch.Tensor]:
        """``criterion``'s named terms on ``batch`` (the built-in's one: ``contrastive_loss``);
        the loss is their sum."""
        images, tokens = batch
        out = self(images, tokens)
        terms = criterion(out["image_features"], out["text_features"], out["logit_scale"],
                          output_dict=True)  # fmt: skip
        return dict(terms) if isinstance(terms, Mapping) else {"loss": terms}

    def contrastive_loss(self, batch: Sequence[torch.Tensor], criterion: FlipLoss) -> torch.Tensor:
        """``criterion``'s loss on ``batch``: the sum of its terms."""
        return functools.reduce(operator.add, self.loss_terms(batch, criterion).values())

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def training_step(self, batch: Sequence[torch.Tensor], _: int) -> torch.Tensor:
        terms = self.loss_terms(batch, self.train_criterion)
        loss = functools.reduce(operator.add, terms.values())  # the built-in's one term as is
        n = len(batch[0])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        if len(terms) > 1:  # a variant's terms, each in the history beside their sum
            for name, value in terms.items():
                self.log(f"train_{name}", value.detach(), on_step=True, on_epoch=True,
                         batch_size=n)  # fmt: skip
        self.log("logit_scale", self.model.logit_scale.exp().detach(), on_step=True,
                 on_epoch=False, batch_size=n)  # fmt: skip
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if self._batch_started is not None:
            elapsed = max(time.perf_counter() - self._batch_started, 1e-9)
            self.images_trained += len(batch[0])
            self.step_seconds += elapsed
            images = len(batch[0]) * self.trainer.world_size
            self.log("images_per_s", images / elapsed, on_step=True, on_epoch=True,
                     batch_size=len(batch[0]))  # fmt: skip

    def validation_step(self, batch: Sequence[torch.Tensor], _: int) -> torch.Tensor:
        loss = self.contrastive_loss(batch, self.val_criterion)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch[0]), sync_dist=True)  # fmt: skip
        return loss

    def peak_lr(self) -> float:
        return peak_lr(self.settings, int(self.trainer.world_size))

    def configure_optimizers(self) -> dict[str, Any]:
        s = self.settings
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(
            self.model, self.peak_lr(), float(s["weight_decay"]), warmup_steps(s, total),
            total, betas=BETAS, eps=EPS,
        )  # fmt: skip


def tune_settings(settings: Mapping[str, Any], tune: Mapping[str, Any]) -> dict[str, Any]:
    """The unmasked-tuning run's settings: the pre-training run's model and data settings,
    with the ``tune`` section's length, warm-up and lr (none of pre-training's carries over)
    and no mask. The lr is the one of ``lr`` (absolute), ``base_lr`` (per 256 samples) or
    ``lr_fraction`` (of pre-training's peak, kept in the same form) that the section sets;
    none set: ``lr_fraction`` :data:`TUNE_LR_FRACTION`; more than one: a ConfigError. The
    ``loss`` carries over: an experiment's objective is that of both phases (tuning only
    closes the gap between masked training and unmasked inference)."""
    tune = {k: v for k, v in tune.items() if v is not None}
    given = [k for k in TUNE_LR_KEYS if k in tune]
    if len(given) > 1:
        raise ConfigError(f"flip.tune sets {' and '.join(given)}: set one of them")
    fraction = tune.pop("lr_fraction", None if given else TUNE_LR_FRACTION)
    out = {k: v for k, v in settings.items() if k not in NOT_INHERITED}
    if fraction is not None:
        if settings.get("base_lr"):
            out["base_lr"] = float(fraction) * float(settings["base_lr"])
        else:
            out["lr"] = float(fraction) * float(settings.get("lr", DEFAULTS["lr"]))
    return {"max_epochs": 1, **out, **tune, "mask_ratio": 0.0}


def _checkpoint(path: str | PathLike[str]) -> dict[str, Any]:
    state = read_checkpoint(path, "FLIP model checkpoint")
    try:
        state["hyper_parameters"]["settings"], state["state_dict"]  # noqa: B018
    except (KeyError, TypeError) as err:
        raise InputError(path, f"not a FLIP model checkpoint: missing {err}") from None
    return state


def load_module(checkpoint: str | PathLike[str]) -> FlipModule:
    """A trained module from ``final.ckpt``, in eval mode (all patches visible)."""
    state = _checkpoint(checkpoint)
    try:
        module = FlipModule(state["hyper_parameters"]["settings"])
        module.load_state_dict(state["state_dict"])
    except (RuntimeError, ValueError) as err:
        raise InputError(checkpoint, f"not a FLIP model checkpoint: {err}") from None
    return module.eval()


def load_weights(module: FlipModule, checkpoint: str | PathLike[str]) -> None:
    """The CLIP weights of a pre-trained run into ``module`` (architectures must match; the
    mask ratio may differ, patch dropout has no parameters)."""
    state = _checkpoint(checkpoint)
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise InputError(checkpoint, f"weights do not fit model {module.settings['model']}: "
                         f"{str(err).splitlines()[0]}") from None  # fmt: skip


def train_experiment(
    settings: Mapping[str, Any],
    shards: Sequence[str | PathLike[str]],
    target: RunTarget,
    init_checkpoint: str | PathLike[str] | None = None,
    val_shards: Sequence[str | PathLike[str]] | None = None,
    trainer_overrides: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit one FLIP run on ``shards`` (the last one held out for ``val_loss`` unless
    ``val_shards``), select the checkpoint on ``val_loss`` and publish it to the target's
    ``final``.

    ``init_checkpoint``: start from those weights (unmasked tuning); a ``last.ckpt`` in the
    target's ``run_dir`` still wins, so a killed tuning run resumes rather than restarting.
    """
    s = {**DEFAULTS, **model_settings(settings)}
    seed = target.seed
    L.seed_everything(seed, workers=True, verbose=False)  # the initial weights depend on it
    module = FlipModule(s)
    if init_checkpoint is not None:
        load_weights(module, init_checkpoint)
        log.info("initial weights from %s", init_checkpoint)
    train_tf, val_tf = image_transforms(module.model)
    data = ShardDataModule(
        shards, s, train_tf, val_tf, tokenizer(s), val_shards=val_shards, seed=seed
    )
    log.info(
        "%s, mask %.2f: %d train / %d val samples in %d / %d shards, batch %d, %d parameters",
        s["model"], float(s["mask_ratio"]), data.train_samples, data.val_samples,
        len(data.train_shards), len(data.val_shards), data.batch_size,
        sum(p.numel() for p in module.parameters()),
    )  # fmt: skip
    s = sample_budget(s, data.train_samples)
    if s.get("epoch_fraction"):
        log.info("%s of an epoch: %d samples", s["epoch_fraction"], s["max_samples"])
    overrides = {"reload_dataloaders_every_n_epochs": 1, **dict(trainer_overrides or {})}
    run = train_settings(
        s, target, inputs=[*shards, *(val_shards or []), *filter(None, [init_checkpoint])],
        trainer_overrides=overrides,
    )  # fmt: skip
    init = None if init_checkpoint is None else str(init_checkpoint)
    return fit_and_publish(
        module, data, run, target.final,
        lambda _: {"monitor": "val_loss", "init_checkpoint": init,
                   "images_per_s": round(module.images_per_s(), 2)},
    )  # fmt: skip
