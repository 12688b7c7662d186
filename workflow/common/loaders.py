"""Training loaders that remember where they are in an epoch.

torchdata's ``StatefulDataLoader`` is a ``DataLoader`` with ``state_dict``/``load_state_dict``:
Lightning stores its state in every checkpoint and restores it on resume, so a run killed in
the middle of an epoch continues with the next batch of the same permutation instead of
starting the epoch again (the shuffling generator and the batches already yielded are part of
the state; under DDP Lightning's ``DistributedSampler`` is fast-forwarded the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader


def resumable_loader(
    dataset: Dataset,
    batch_size: int | None,
    *,
    shuffle: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    generator: torch.Generator | None = None,
) -> StatefulDataLoader:
    """The loader of every map-style track (any split; training needs it): resumable mid-epoch."""
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
        persistent_workers=num_workers > 0,
    )


class SplitDataModule(L.LightningDataModule):
    """Map-style ``train`` and ``val`` datasets, built once on the first ``setup``, each served
    by a :func:`resumable_loader` (train shuffled). A track says only how its datasets are
    made (:meth:`make_datasets`)."""

    def __init__(
        self,
        batch_size: int,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.collate_fn = batch_size, num_workers, collate_fn
        self.datasets: dict[str, Any] = {}

    def make_datasets(self) -> dict[str, Dataset]:
        """``{"train": ..., "val": ...}``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = dict(self.make_datasets())

    def loader(self, split: str, shuffle: bool) -> StatefulDataLoader:
        return resumable_loader(
            self.datasets[split], self.batch_size, shuffle=shuffle,
            num_workers=self.num_workers, collate_fn=self.collate_fn,
        )  # fmt: skip

    def train_dataloader(self) -> StatefulDataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self.loader("val", shuffle=False)
