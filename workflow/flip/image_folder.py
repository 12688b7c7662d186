"""The ImageFolder set for zero-shot and linear-probe evaluation (``root/val/<class>/*.jpg``,
checked image by image) and the ``classnames.txt`` every zero-shot evaluation reads.

Apart from the pre-training data: reading it needs neither Lightning nor webdataset. (The
evaluation stage's splits and their feature cache are workflow/flip/eval_data.py.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from os import PathLike
from pathlib import Path

from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from workflow.common.errors import InputError, Skips
from workflow.common.images import BadImage, decode_image

log = logging.getLogger("lsai.flip.data")


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
