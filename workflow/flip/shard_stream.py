"""The webdataset stream of FLIP's image-caption shards: the training and validation batches,
and the progress a resume needs (the DataModule over it: workflow/flip/data.py).

Training pipeline (per rank, per DataLoader worker)::

    shard list (permuted with seed + epoch, the same on every rank)
      -> split_by_node -> split_by_worker           (distinct shards per rank and worker)
      -> tar samples -> shuffle buffer (``shuffle`` samples, seeded)
      -> decode PIL -> (image transform, tokenized caption) -> batches of ``batch_size``
      -> with_epoch(batches per worker)             (an epoch is a fixed number of batches)

Samples without a decodable ``jpg`` or a ``txt`` are skipped with a warning (the filter
should have dropped them). Every worker's stream repeats its shards when it runs out before
its share of batches, so a rank with fewer samples never stalls the others.

For a resume inside an epoch, every training batch carries its samples' shard and key and
names the shards it completed (:class:`ShardProgress`); the resumed epoch's stream leaves out
the shards trained in full and the keys trained of the others (``skip_trained``).

With fewer shards than ranks x workers a plain split would leave some workers without data;
then every worker *resamples* shards with replacement (webdataset's ``resampled``) and a
warning says so: an epoch is still the same number of batches, but not exactly one pass.

Validation is one ordered pass in which every rank reads every shard.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import webdataset as wds

from workflow.common.errors import InputError
from workflow.common.images import decode_image

log = logging.getLogger("lsai.flip.data")


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
