"""Genes of one split read lazily from the layout's HDF5 file (workflow.sequence.layout).

A promoter is stored as bool one-hot and is read one gene at a time, only its model window;
it becomes float inside the model, one batch at a time. Nothing holds the whole set in
memory: a 20,000-gene Xpresso split is 1.6 GB as bool and 6.4 GB as float32.

With ``folds`` K (k-fold cross-validation, for the small protein sets) the genes of all three
split files that have the task's target are pooled and dealt into K folds by a fixed
permutation (``FOLD_SEED``), the same for every run: run ``fold`` k tests on fold k,
validates on ``CV_VAL_FRACTION`` of the other genes and trains on the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from workflow.common.errors import InputError
from workflow.common.loaders import SplitDataModule
from workflow.sequence.layout import SPLITS, TASKS

PROTEIN_KEYS = ("protein", "protein_length", "protein_label")
FOLD_SEED = 0  # the folds do not depend on the run's seed, so K runs cover every gene once
CV_VAL_FRACTION = 0.1


def needs(task: str) -> tuple[str, ...]:
    """The arrays a task reads."""
    return {
        "mrna": ("promoter", "data", "label"),
        "protein": ("protein", "protein_label"),
        "joint": ("promoter", "data", "protein", "protein_label"),
    }[task]


def split_file(folder: str | PathLike[str], split: str) -> Path:
    return Path(folder) / SPLITS[split]


def check_split(path: Path, task: str) -> None:
    """The file exists, is HDF5 and holds what ``task`` reads (with a clear error if not)."""
    if not path.is_file():
        raise InputError(path, "split file not found")
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in needs(task) if k not in h5]
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file: {err}") from None
    if missing:
        hint = " (the published Xpresso files serve the mrna task only)" if task != "mrna" else ""
        raise InputError(path, f"lacks {missing} for task {task!r}{hint}")


class GeneSplit(Dataset):
    """One split's genes for one task; ``window`` (start, end) crops the promoter.

    Items: ``dna`` uint8 (W, 4), ``data`` float32 (8,), ``protein`` uint8 (P,) and
    ``target`` float32 (), as the task needs. Genes without a protein label are left out of
    the protein and joint tasks.
    """

    def __init__(self, path: str | PathLike[str], task: str, window: Sequence[int]) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.path, self.task = Path(path), task
        check_split(self.path, task)
        with h5py.File(self.path, "r") as h5:
            length = int(h5["promoter"].shape[1]) if "promoter" in h5 else 0
            target_key = "label" if task == "mrna" else "protein_label"
            targets = h5[target_key][()].astype(np.float32)
            self.names = [n.decode() if isinstance(n, bytes) else str(n) for n in h5["geneName"]]
        start, end = (int(window[0]), int(window[1])) if window else (0, length)
        if "promoter" in needs(task) and not 0 <= start < end <= length:
            raise InputError(
                self.path, f"window [{start}, {end}) outside the stored promoters (0-{length})"
            )
        self.window = (start, end)
        self.rows = np.flatnonzero(np.isfinite(targets))
        if not len(self.rows):
            raise InputError(self.path, f"no gene with a {target_key} for task {task!r}")
        self.targets = targets
        self._h5: h5py.File | None = None  # opened per worker process

    def __len__(self) -> int:
        return len(self.rows)

    def gene_names(self) -> list[str]:
        return [self.names[i] for i in self.rows]

    def labels(self) -> np.ndarray:
        return self.targets[self.rows]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        row = int(self.rows[index])
        item: dict[str, Any] = {"target": torch.tensor(self.targets[row])}
        keys = needs(self.task)
        if "promoter" in keys:
            start, end = self.window
            dna = self._h5["promoter"][row, start:end]
            item["dna"] = torch.from_numpy(dna.view(np.uint8))
            item["data"] = torch.from_numpy(self._h5["data"][row].astype(np.float32))
        if "protein" in keys:
            item["protein"] = torch.from_numpy(self._h5["protein"][row].astype(np.uint8))
        return item

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_h5": None}  # worker processes open their own handle


class FoldGenes(Subset):
    """Some genes of the pooled splits (one cross-validation part), named like a GeneSplit."""

    def __init__(self, pool: list[GeneSplit], indices: np.ndarray) -> None:
        super().__init__(ConcatDataset(pool), indices.tolist())
        self.names = [n for split in pool for n in split.gene_names()]
        self.targets = np.concatenate([split.labels() for split in pool])

    def gene_names(self) -> list[str]:
        return [self.names[i] for i in self.indices]

    def labels(self) -> np.ndarray:
        return self.targets[self.indices]


def fold_indices(n: int, folds: int, fold: int) -> dict[str, np.ndarray]:
    """Positions in the pooled genes of one fold's train / val / test parts."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the {n} pooled genes, got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    parts = np.array_split(np.random.default_rng(FOLD_SEED).permutation(n), folds)
    rest = np.concatenate([p for k, p in enumerate(parts) if k != fold])
    n_val = max(1, round(CV_VAL_FRACTION * len(rest)))
    return {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": parts[fold]}


def gene_sets(
    folder: str | PathLike[str],
    task: str,
    window: Sequence[int],
    folds: int | None = None,
    fold: int = 0,
    parts: tuple[str, ...] = tuple(SPLITS),
) -> dict[str, GeneSplit | FoldGenes]:
    """``parts`` of train / val / test genes: the encoded split files, or one fold of their
    pool (which reads all three files)."""
    if not folds:
        return {s: GeneSplit(split_file(folder, s), task, window) for s in parts}
    pool = [GeneSplit(split_file(folder, s), task, window) for s in SPLITS]
    where = fold_indices(sum(len(s) for s in pool), int(folds), int(fold))
    return {part: FoldGenes(pool, where[part]) for part in parts}


class GeneDataModule(SplitDataModule):
    """Train / validation genes of one task from an encoded folder (or of one CV fold)."""

    def __init__(
        self,
        folder: str | PathLike[str],
        task: str,
        window: Sequence[int],
        batch_size: int,
        num_workers: int = 0,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.folder, self.task, self.window = Path(folder), task, tuple(window)
        self.folds, self.fold = folds, fold

    def make_datasets(self) -> dict[str, GeneSplit | FoldGenes]:
        return gene_sets(
            self.folder, self.task, self.window, self.folds, self.fold, ("train", "val")
        )
