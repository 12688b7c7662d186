"""FLIP pre-training data: the LightningDataModule over image-caption webdataset shards. The
stream itself (pipeline, shuffling, resampling) is workflow/flip/shard_stream.py; the
ImageFolder set for zero-shot and linear-probe evaluation is workflow/flip/image_folder.py.

The epoch length comes from the shards' ``_stats.json`` (``successes``; the parquet's row
count when it is missing), so Lightning knows the number of batches: ``samples //
(batch_size * world_size)`` per rank, the same on every rank (DDP needs that, as the
all-gather of the loss needs equal batches: batches are never partial).

A run killed inside an epoch resumes inside it (``ShardDataModule.state_dict``): every
training batch carries its samples' shard and key and names the shards it completed
(``ShardProgress`` of shard_stream.py); a checkpoint keeps, over all ranks, the shards of the
epoch trained in full and the keys trained of the others (only the shards a worker was reading
or still had in its shuffle buffer: a few per worker). The resumed epoch skips both: it trains
each of the epoch's samples at most once and leaves out none that the uninterrupted epoch would
reach, only in another order (the shuffle buffer starts afresh). Granularity: the sample.

Validation (the contrastive ``val_loss``) reads ``val_shards``; by default the *last* shard of
the list is held out from training (with a single shard there is no held-out set and that is
an error). Every rank reads the whole val set in order, so ``val_loss`` is the same number
on any world size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import lightning as L
import pyarrow.parquet as pq
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from workflow.common.callbacks import gather_objects
from workflow.common.config import schema_defaults
from workflow.common.errors import InputError
from workflow.flip.shard_stream import shard_pipeline

DATA_DEFAULTS: dict[str, Any] = schema_defaults("flip_train")


def shard_count(shard: str | PathLike[str]) -> int:
    """Samples in one ``00000.tar``: ``successes`` of its ``_stats.json``, else its parquet's
    row count (img2dataset writes both; ``count`` includes failed downloads)."""
    tar = Path(shard)
    stats = tar.with_name(tar.name.removesuffix(".tar") + "_stats.json")
    parquet = tar.with_suffix(".parquet")
    if stats.is_file():
        try:
            return int(json.loads(stats.read_text())["successes"])
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(stats, f"no sample count in it: {err}") from None
    if parquet.is_file():
        return int(pq.read_metadata(parquet).num_rows)
    raise InputError(tar, "no _stats.json or .parquet beside it to count its samples")


def distributed() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) without it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardDataModule(L.LightningDataModule):
    """Training and validation batches from webdataset shards (see the module docstring).

    The train stream's shard order and shuffle seed are ``seed`` + epoch: with the trainer's
    ``reload_dataloaders_every_n_epochs=1`` every epoch is a new permutation, and a resumed
    run sees the same epochs as an uninterrupted one.
    """

    def __init__(
        self,
        shards: Sequence[str | PathLike[str]],
        settings: Mapping[str, Any],
        train_transform: Callable,
        val_transform: Callable,
        tokenize: Callable[..., torch.Tensor],
        val_shards: Sequence[str | PathLike[str]] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        s = {**DATA_DEFAULTS, **dict(settings)}
        shards = [Path(p) for p in shards]
        if val_shards is None:
            if len(shards) < 2:
                raise InputError(
                    shards[0] if shards else "shards",
                    "one shard only: the last shard is held out for val_loss, pass val_shards",
                )
            shards, val_shards = shards[:-1], shards[-1:]
        self.train_shards = shards
        self.val_shards = [Path(p) for p in val_shards]
        self.batch_size = int(s["batch_size"])
        self.shuffle = int(s["shuffle"])
        self.num_workers = int(s["num_workers"])
        self.train_transform, self.val_transform = train_transform, val_transform
        self.tokenize = tokenize
        self.seed = seed
        self.consumed: set[str] = set()  # shards of ``consumed_epoch`` trained in full
        self.trained: dict[str, set[str]] = {}  # ... and the keys trained of the others
        self.consumed_epoch: int | None = None
        self.train_samples = sum(shard_count(p) for p in self.train_shards)
        self.val_samples = sum(shard_count(p) for p in self.val_shards)
        if self.train_samples < self.batch_size:
            raise InputError(
                self.train_shards[0],
                f"{self.train_samples} training samples, fewer than one batch of {self.batch_size}",
            )

    def world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else distributed()[1]

    def batches_per_epoch(self, world_size: int | None = None) -> int:
        """Full batches per rank in one pass over the training shards."""
        world = world_size or self.world_size()
        return max(self.train_samples // (self.batch_size * world), 1)

    def epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def train_dataset(self, epoch: int = 0) -> wds.WebDataset:
        world = self.world_size()
        # A new epoch starts afresh; an earlier one is only Lightning asking for the length
        # before it has restored the loops of a resumed run.
        if self.consumed_epoch is None or epoch > self.consumed_epoch:
            self.consumed, self.trained, self.consumed_epoch = set(), {}, epoch
        resumed = epoch == self.consumed_epoch
        return shard_pipeline(
            self.train_shards, self.train_transform, self.tokenize, self.batch_size,
            shuffle=self.shuffle, seed=self.seed * 100_003 + epoch,
            batches=self.batches_per_epoch(world), world_size=world,
            num_workers=self.num_workers, skip=set(self.consumed) if resumed else (),
            trained={u: set(k) for u, k in self.trained.items()} if resumed else None,
        )  # fmt: skip

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch's samples are noted here, where Lightning hands the batch to the
        step (not when the loader prefetched it); the step gets (images, tokens)."""
        if len(batch) == 3:
            images, tokens, info = batch
            self.note_trained(info)
            return images, tokens
        return batch

    def note_trained(self, info: Mapping[str, Any]) -> None:
        for url, key in zip(info["shards"], info["keys"], strict=True):
            self.trained.setdefault(url, set()).add(key)
        for url in info["done"]:
            self.consumed.add(url)
            self.trained.pop(url, None)

    def state_dict(self) -> dict[str, Any]:
        """The data position a checkpoint keeps, over all ranks (rank 0 writes it): the
        current epoch's shards trained in full and the keys trained of the others."""
        consumed: set[str] = set()
        trained: dict[str, set[str]] = {}
        for done, keys in gather_objects((sorted(self.consumed), self.trained)):
            consumed.update(done)
            for url, names in keys.items():
                trained.setdefault(url, set()).update(names)
        return {
            "epoch": self.consumed_epoch,
            "consumed": sorted(consumed),
            "trained": {u: sorted(k) for u, k in trained.items() if u not in consumed},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed_epoch = state.get("epoch")
        self.consumed = set(state.get("consumed") or ())
        self.trained = {u: set(k) for u, k in (state.get("trained") or {}).items()}

    def val_dataset(self) -> wds.WebDataset:
        # a fixed batch size for a comparable loss; never more than the val set holds
        batch = max(min(self.batch_size, self.val_samples), 1)
        return shard_pipeline(self.val_shards, self.val_transform, self.tokenize, batch)

    def _loader(self, dataset: wds.WebDataset) -> DataLoader:
        return DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers,
            persistent_workers=False, pin_memory=torch.cuda.is_available(),
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(self.epoch()))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset())
