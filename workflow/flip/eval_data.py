"""The evaluation's image splits (ImageFolder layout) and their cached image features.

A split is ``<folder>/<class>/*.jpg`` listed as torchvision's ImageFolder does (classes are the
sorted folder names, so ImageNet's wnid folders give the standard class indices). Images are
decoded in the DataLoader's workers by the shared decoder (one pass: ImageNet's 1.28M train
images are not read twice); a damaged one follows ``on_bad_sample``, listed in the split's
``Skips``. Features are cached in an undeclared folder next to the run, keyed by the checkpoint
(size and modification time), the split's image list and how features are computed, so a
rerun of the evaluation (a changed template set, probe grid, ...) does not encode the images
again; a new checkpoint or image list recomputes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from workflow.common.atomic import atomic_path
from workflow.common.checkpoint import load_checkpoint
from workflow.common.config import config_hash
from workflow.common.errors import InputError, Skips
from workflow.common.images import BadImage, decode_image, max_pixels
from workflow.common.training import run_key

log = logging.getLogger("lsai.flip.eval_data")

#: Bumped when the way features are computed changes: older cache files are then ignored.
FEATURES_VERSION = 1


@dataclass
class Split:
    """One ImageFolder split: its name (``val``, ``train``), folder, sorted class folders and
    (path, label) samples in ImageFolder order."""

    name: str
    directory: Path
    classes: list[str]
    samples: list[tuple[str, int]]

    def item(self, path: str) -> str:
        """``<split>/<class>/<file>``: how predictions and skip lists name an image."""
        return f"{self.name}/{Path(path).relative_to(self.directory).as_posix()}"

    def listing_hash(self) -> str:
        """What the features depend on in the folder: every image's name and label."""
        return config_hash([self.classes, [[self.item(p), c] for p, c in self.samples]])


def list_split(directory: str | PathLike[str], name: str) -> Split:
    """The ImageFolder listing of ``directory`` (torchvision's rules: sorted class folders,
    images with an image extension, an empty class folder is an error)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, f"{name} image folder not found")
    try:
        classes, index = find_classes(str(directory))
        samples = make_dataset(str(directory), index, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as err:
        raise InputError(directory, f"not an ImageFolder ({name}/<class>/*.jpg): {err}") from None
    return Split(name, directory, classes, samples)


def check_same_classes(train: Split, val: Split) -> None:
    """The train split's class folders are the val split's (labels are folder indices)."""
    if train.classes != val.classes:
        missing = sorted(set(val.classes) - set(train.classes))
        extra = sorted(set(train.classes) - set(val.classes))
        raise InputError(
            train.directory,
            f"class folders differ from the val split's {val.directory}: missing "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, extra "
            f"{extra[:5]}{'...' if len(extra) > 5 else ''}",
        )


class DecodedImages(Dataset):
    """(image tensor | None, label, index, problem | None) per sample: the decode runs in the
    loader's workers; a damaged image comes back as its (path, problem, reason)."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, limit: int) -> None:
        self.samples, self.transform, self.limit = samples, transform, limit

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int, int, tuple[str, str, str] | None]:
        path, label = self.samples[i]
        try:
            image = decode_image(path, limit=self.limit)
        except BadImage as err:
            return None, label, i, (err.path, err.problem, err.reason)
        return self.transform(image), label, i, None


def collate(batch: list) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list]:
    """The good images stacked, with their labels and indices; the damaged ones listed."""
    good = [b for b in batch if b[0] is not None]
    images = torch.stack([b[0] for b in good]) if good else None
    labels = torch.tensor([b[1] for b in good], dtype=torch.long)
    index = torch.tensor([b[2] for b in good], dtype=torch.long)
    return images, labels, index, [(b[2], b[3]) for b in batch if b[0] is None]


@dataclass
class Features:
    """Normalised image features of a split's readable images, their labels and sample
    indices, and the damaged images left out (path, item, problem, reason)."""

    features: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    skipped: list[list[str]]
    cached: bool = False


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 autocast on a GPU when ``amp``; a no-op context elsewhere."""
    enabled = amp and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def encode_split(
    model: torch.nn.Module,
    split: Split,
    transform: Callable,
    batch_size: int = 256,
    num_workers: int = 0,
    amp: bool = True,
    policy: str = "fail",
) -> Features:
    """One pass of the model's image tower over the split, in batches on the model's device.
    A damaged image under ``fail`` stops the pass (InputError naming it)."""
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(
        DecodedImages(split.samples, transform, max_pixels()), batch_size=batch_size,
        shuffle=False, num_workers=num_workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )  # fmt: skip
    features, labels, index, skipped = [], [], [], []
    started, done, last = time.monotonic(), 0, time.monotonic()
    for images, target, idx, bad in loader:
        for i, (path, problem, reason) in bad:
            if policy == "fail":
                raise BadImage(path, problem, reason)
            skipped.append([path, split.item(split.samples[i][0]), problem, reason])
        if images is not None:
            with autocast(device, amp):
                encoded = model.encode_image(images.to(device, non_blocking=True))
            features.append(F.normalize(encoded.float(), dim=-1).cpu())
            labels.append(target)
            index.append(idx)
        done += len(target) + len(bad)
        if time.monotonic() - last > 60:
            last = time.monotonic()
            log.info("%s: %d / %d images encoded (%.0f images/s)", split.name, done,
                     len(split.samples), done / (last - started))  # fmt: skip
    if not features:
        raise InputError(split.directory, f"no readable image ({len(skipped)} skipped)")
    log.info("%s: %d images encoded in %.1f s, %d skipped", split.name, done,
             time.monotonic() - started, len(skipped))  # fmt: skip
    return Features(torch.cat(features), torch.cat(labels), torch.cat(index), skipped)


def feature_key(checkpoint: str | PathLike[str], split: Split, how: dict[str, Any]) -> str:
    """The cache key: the checkpoint file (size, mtime), the split's listing and ``how``
    (model, precision, pixel limit, version)."""
    return run_key(
        {"split": split.name, **how, "max_pixels": max_pixels(), "version": FEATURES_VERSION},
        [checkpoint],
        images=split.listing_hash(),
    )


def cache_file(cache_dir: str | PathLike[str], split: Split, key: str) -> Path:
    return Path(cache_dir) / f"{split.name}.{key}.pt"


def read_cache(path: Path, split: Split) -> Features | None:
    """A cache file's features, or None (with a warning) when it is unreadable or does not
    fit the split."""
    try:
        data = load_checkpoint(path, "feature cache")
        features = Features(data["features"], data["labels"], data["index"], data["skipped"], True)
    except (InputError, KeyError, TypeError) as err:
        log.warning("feature cache %s not used: %s", path, err)
        return None
    rows = len(features.features)
    if (
        len(features.labels) != rows
        or len(features.index) != rows
        or (rows + len(features.skipped) != len(split.samples))
    ):
        log.warning("feature cache %s does not fit the %s split: recomputing", path, split.name)
        return None
    return features


def write_cache(path: Path, features: Features) -> None:
    """The features, atomically; older cache files of the split are removed."""
    with atomic_path(path) as tmp:
        torch.save(
            {"features": features.features.contiguous(), "labels": features.labels,
             "index": features.index, "skipped": features.skipped},
            tmp,
        )  # fmt: skip
    split = path.name.split(".", 1)[0]
    for old in path.parent.glob(f"{split}.*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


def split_features(
    model: torch.nn.Module,
    split: Split,
    transform: Callable,
    checkpoint: str | PathLike[str],
    how: dict[str, Any],
    cache_dir: str | PathLike[str] | None = None,
    policy: str = "fail",
    skips: Skips | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    amp: bool = True,
) -> Features:
    """The split's features from the cache when its key matches, else one pass of the model
    (then cached). Damaged images, found now or recorded in the cache, follow ``policy``
    and are added to ``skips``."""
    path = None
    features = None
    if cache_dir is not None:
        path = cache_file(cache_dir, split, feature_key(checkpoint, split, how))
        if path.is_file():
            features = read_cache(path, split)
            if features is not None:
                log.info("%s: %d features from the cache %s", split.name, len(features.features),
                         path)  # fmt: skip
    if features is None:
        features = encode_split(model, split, transform, batch_size, num_workers, amp, policy)
        if path is not None:
            write_cache(path, features)
    skips = Skips() if skips is None else skips
    for image, item, problem, reason in features.skipped:
        skips.handle(BadImage(image, problem, reason), item, policy, log)
    return features


def default_train_folder(val_root: str | PathLike[str]) -> Path:
    """``<val root>/train``: where ImageNet's and the demo's train split sit beside ``val/``."""
    return Path(val_root) / "train"
