"""FLIP data: image-caption webdataset shards for pre-training, an ImageFolder for zero-shot
and linear-probe evaluation.

Training pipeline (per rank, per DataLoader worker)::

    shard list (permuted with seed + epoch, the same on every rank)
      -> split_by_node -> split_by_worker           (distinct shards per rank and worker)
      -> tar samples -> shuffle buffer (``shuffle`` samples, seeded)
      -> decode PIL -> (image transform, tokenized caption) -> batches of ``batch_size``
      -> with_epoch(batches per worker)             (an epoch is a fixed number of batches)

Samples without a decodable ``jpg`` or a ``txt`` are skipped with a warning (the filter
should have dropped them). The epoch length comes from the shards' ``_stats.json``
(``successes``; the parquet's row count when it is missing), so Lightning knows the number
of batches: ``samples // (batch_size * world_size)`` per rank, the same on every rank (DDP
needs that, as the all-gather of the loss needs equal batches: batches are never partial).
Every worker's stream repeats its shards when it runs out before its share of batches, so
a rank with fewer samples never stalls the others.

A run killed inside an epoch resumes inside it (``ShardDataModule.state_dict``): every
training batch carries its samples' shard and key and names the shards it completed
(:class:`ShardProgress`); a checkpoint keeps, over all ranks, the shards of the epoch trained
in full and the keys trained of the others (only the shards a worker was reading or still had
in its shuffle buffer: a few per worker). The resumed epoch skips both: it trains each of the
epoch's samples at most once and leaves out none that the uninterrupted epoch would reach,
only in another order (the shuffle buffer starts afresh). Granularity: the sample.

With fewer shards than ranks x workers a plain split would leave some workers without data;
then every worker *resamples* shards with replacement (webdataset's ``resampled``) and a
warning says so: an epoch is still the same number of batches, but not exactly one pass.

Validation (the contrastive ``val_loss``) reads ``val_shards``; by default the *last* shard of
the list is held out from training (with a single shard there is no held-out set and that is
an error). Every rank reads the whole val set in order, so ``val_loss`` is the same number
on any world size.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import lightning as L
import pyarrow.parquet as pq
import torch
import webdataset as wds
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from workflow.common.callbacks import gather_objects
from workflow.common.config import schema_defaults
from workflow.common.errors import InputError, Skips
from workflow.common.images import BadImage, decode_image

log = logging.getLogger("lsai.flip.data")

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


def _image(data: bytes) -> Any:
    """A shard's image through the shared decoder (a damaged one is skipped by the handler;
    the filter stage has already dropped and counted them)."""
    return decode_image(data, "shard sample")


def _caption(tokenize: Callable[..., torch.Tensor]) -> Callable[[str], torch.Tensor]:
    def encode(text: str) -> torch.Tensor:
        return tokenize([text])[0]

    return encode


def _all_shards(src: Any) -> Any:
    """A node splitter that keeps every shard (validation: each rank reads all of it)."""
    yield from src


class ShardProgress:
    """One worker's stream: which of its shards have had every sample they yielded put into a
    batch. ``count_reads`` sits after the tar reader, ``mark_batches`` after the batcher; each
    batch then carries its samples' shards and keys and the shards it completed, once each. A
    sample lost between the two (a damaged image, the partial batch at the end) keeps its shard
    open: read again on a resume, never skipped."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.read: Counter[str] = Counter()
        self.emitted: Counter[str] = Counter()
        self.finished: set[str] = set()
        self.reported: set[str] = set()
        self.current: str | None = None

    def count_reads(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        self.reset()  # a new pass (webdataset repeats the pipeline when the shards run out)
        for sample in src:
            url = sample.get("__url__")
            if url != self.current:
                if self.current is not None:
                    self.finished.add(self.current)
                self.current = url
            self.read[url] += 1
            yield sample
        if self.current is not None:
            self.finished.add(self.current)

    def mark_batches(self, src: Iterator[Sequence[Any]]) -> Iterator[tuple[Any, Any, dict]]:
        for images, tokens, urls, keys in src:
            self.emitted.update(urls)
            done = [u for u in self.finished - self.reported if self.emitted[u] == self.read[u]]
            self.reported.update(done)
            yield images, tokens, {"shards": list(urls), "keys": list(keys), "done": sorted(done)}


def skip_trained(trained: Mapping[str, Collection[str]]) -> Callable[[Iterator], Iterator]:
    """A stage that drops the samples a resumed epoch has trained already (shard -> keys)."""

    def stage(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in src:
            if sample.get("__key__") not in trained.get(sample.get("__url__"), ()):
                yield sample

    return stage


def shard_pipeline(
    shards: Sequence[str | PathLike[str]],
    transform: Callable,
    tokenize: Callable[..., torch.Tensor],
    batch_size: int,
    *,
    shuffle: int = 0,
    seed: int = 0,
    batches: int | None = None,
    world_size: int = 1,
    num_workers: int = 0,
    split: bool = True,
    skip: Collection[str] = (),
    trained: Mapping[str, Collection[str]] | None = None,
) -> wds.WebDataset:
    """Batches of (images [B,3,H,W], token ids [B,L]) from ``shards``.

    ``batches`` set: an endless (repeated or resampled) stream cut to that many batches per
    rank, split over ranks (``split``) and workers, each batch with a third item, its samples'
    shards and keys and the shards it completed (:class:`ShardProgress`). A resume passes the
    epoch's shards trained in full (``skip``) and the keys trained of others (``trained``).
    ``batches`` None: one ordered pass, every rank reading every shard (validation).
    """
    urls = [str(s) for s in shards]
    if not urls:
        raise InputError("shards", "no shards given")
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        raise InputError(missing[0], "shard not found")
    workers = max(num_workers, 1)
    if batches is not None:
        random.Random(seed).shuffle(urls)  # same permutation on every rank, new each epoch
        done = set(skip)
        left = [u for u in urls if u not in done]
        if skip or trained:
            keys = sum(len(k) for k in (trained or {}).values())
            log.info(
                "resuming the epoch: %d of %d shards trained already, %d samples of %d others",
                len(urls) - len(left),
                len(urls),
                keys,
                len(trained or {}),
            )
        urls = left or urls
    if batches is None:
        dataset = wds.WebDataset(
            urls, shardshuffle=False, nodesplitter=_all_shards,
            workersplitter=wds.split_by_worker, handler=wds.warn_and_continue, empty_check=False,
        )  # fmt: skip
    elif split and len(urls) >= world_size * workers:
        dataset = wds.WebDataset(
            urls, shardshuffle=False, nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker, handler=wds.warn_and_continue,
        )  # fmt: skip
    else:
        log.warning(
            "%d shards for %d rank(s) x %d worker(s): resampling shards with replacement "
            "(an epoch is %d batches per rank, not exactly one pass); write smaller shards "
            "to read each sample once per epoch", len(urls), world_size, workers, batches,
        )  # fmt: skip
        dataset = wds.WebDataset(
            urls, resampled=True, shardshuffle=False, nodesplitter=None,
            workersplitter=None, handler=wds.warn_and_continue, seed=seed,
        )  # fmt: skip
    progress = ShardProgress() if batches is not None else None
    if progress is not None:
        if trained:
            dataset = dataset.compose(skip_trained(trained))
        dataset = dataset.compose(progress.count_reads)
    if shuffle > 0:
        dataset = dataset.shuffle(shuffle, initial=min(shuffle, 100), seed=seed)
    fields, maps = ("jpg", "txt"), [transform, _caption(tokenize)]
    if progress is not None:
        fields, maps = (*fields, "__url__", "__key__"), [*maps, None, None]
    dataset = (
        dataset.decode(wds.handle_extension("jpg", _image), handler=wds.warn_and_continue)
        .to_tuple(*fields, handler=wds.warn_and_continue)
        .map_tuple(*maps, handler=wds.warn_and_continue)
        .batched(batch_size, partial=False)
    )
    if progress is not None:
        dataset = dataset.compose(progress.mark_batches)
        per_worker = math.ceil(batches / workers)
        dataset = dataset.with_epoch(per_worker).with_length(per_worker * workers, silent=True)
    return dataset


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


def read_classnames(root: str | PathLike[str]) -> list[str]:
    """``classnames.txt`` (one name a line, in the order of the sorted class folders)."""
    path = Path(root) / "classnames.txt"
    if not path.is_file():
        raise InputError(path, "class names file not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise InputError(path, "no class names in it")
    return names


def image_folder(
    root: str | PathLike[str],
    transform: Callable,
    folder: str = "val",
    policy: str = "fail",
    skips: Skips | None = None,
) -> tuple[ImageFolder, list[str]]:
    """The ``root/val/<class_dir>/*.jpg`` set and its class names (``root/classnames.txt``),
    checked to name as many classes as there are folders. Every image is decoded once by the
    shared decoder first: a damaged one follows ``policy`` (``skip``: left out, in ``skips``)."""
    directory = Path(root) / folder
    if not directory.is_dir():
        raise InputError(directory, "image folder not found")
    try:
        dataset = ImageFolder(str(directory), transform=transform, loader=decode_image)
    except (FileNotFoundError, OSError) as err:
        raise InputError(directory, f"not an ImageFolder: {err}") from None
    skips = Skips() if skips is None else skips
    good = []
    for path, label in tqdm(dataset.samples, desc="check val images", mininterval=5):
        try:
            decode_image(path)
            good.append((path, label))
        except BadImage as err:
            skips.handle(err, Path(path).name, policy, log)
    if not good:
        raise InputError(directory, f"no readable image ({len(skips)} skipped)")
    dataset.samples = dataset.imgs = good
    dataset.targets = [label for _, label in good]
    names = read_classnames(root)
    if len(names) != len(dataset.classes):
        raise InputError(
            Path(root) / "classnames.txt",
            f"{len(names)} class names for {len(dataset.classes)} class folders",
        )
    return dataset, names


def image_loader(dataset: ImageFolder, batch_size: int = 256, num_workers: int = 0) -> DataLoader:
    """Ordered batches of (images, labels) for evaluation."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
