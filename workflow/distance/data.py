"""LightningDataModule over the extracted stores: objects for DisNet, frames for Zhu & Fang."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from workflow.common.loaders import SplitDataModule, resumable_loader
from workflow.distance.models import reads_frames
from workflow.distance.store import FrameDataset, collate_frames, geometry_features, object_table


class ObjectDataset(Dataset):
    """Box geometry and distance per object; no pixels, so it lives in memory."""

    def __init__(self, path: Path) -> None:
        table = object_table(path)
        self.geometry = torch.from_numpy(geometry_features(table))
        self.target = torch.tensor(table["distance"].to_numpy(np.float32))

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"geometry": self.geometry[i], "target": self.target[i], "rows": i}


def training_statistics(train_store: Path) -> dict[str, Any]:
    """Standardisation constants, computed once on the training split and kept in the model."""
    table = object_table(train_store)
    features = geometry_features(table)
    std = features.std(axis=0)
    return {
        "target_mean": float(table["distance"].mean()),
        "target_std": float(table["distance"].std() or 1.0),
        "feature_mean": features.mean(axis=0).tolist(),
        "feature_std": np.where(std > 1e-6, std, 1.0).tolist(),
    }


def make_dataset(model: str, store: Path) -> Dataset:
    return FrameDataset(store) if reads_frames(model) else ObjectDataset(store)


def make_loader(
    model: str, dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool
) -> DataLoader:
    return resumable_loader(
        dataset,
        batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_frames if reads_frames(model) else None,
    )


class DistanceDataModule(SplitDataModule):
    """Train / val objects (frames, for Zhu's whole-image model) of two stores."""

    def __init__(
        self, model: str, train_store: Path, val_store: Path, batch_size: int, num_workers: int = 0
    ) -> None:
        super().__init__(batch_size, num_workers, collate_frames if reads_frames(model) else None)
        self.model = model
        self.stores = {"train": Path(train_store), "val": Path(val_store)}

    def make_datasets(self) -> dict[str, Dataset]:
        return {split: make_dataset(self.model, store) for split, store in self.stores.items()}
