"""A dataset in any supported layout -> one prepared ``transforms.json``: held-out views
split off, training poses perturbed by seeded se(3) noise (ground truth kept per frame), every
image checked before any training starts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workflow.common.errors import InputError
from workflow.common.images import decode_image
from workflow.common.paths import inside
from workflow.nerf.dtu import read_dtu
from workflow.nerf.geometry import perturb_poses
from workflow.nerf.replica import read_replica
from workflow.nerf.transforms import (
    Intrinsics,
    Scene,
    check_size,
    read_transforms,
    with_ground_truth,
    write_transforms,
)

log = logging.getLogger("lsai.nerf.prepare")

FORMATS = ("nerfstudio", "dtu", "replica")


def read_source(fmt: str, root: Path, settings: Mapping[str, Any]) -> Scene:
    """The dataset's views with poses in OpenGL axes, file paths relative to its folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder not found")
    if fmt == "nerfstudio":
        scene = read_transforms(root / "transforms.json")
        for view in scene.views:  # a dataset's own files only (the prepared file points back)
            for name in filter(None, (view.file_path, view.mask_path)):
                inside(root, name, root / "transforms.json")
        return scene
    if fmt == "dtu":
        return Scene(root, read_dtu(root))
    if fmt == "replica":
        camera = Intrinsics(
            *(settings["camera"][k] for k in ("fx", "fy", "cx", "cy", "width", "height"))
        )
        return Scene(root, read_replica(root, camera, int(settings["frame_stride"])))
    raise ValueError(f"unknown dataset format {fmt!r} (known: {', '.join(FORMATS)})")


def split_views(scene: Scene, holdout_every: int) -> tuple[list[str], list[str]]:
    """The file's own train/test split if it has one, else every ``holdout_every``-th view
    held out (the first one included), as DTU and LLFF evaluations do."""
    names = [v.file_path for v in scene.views]
    if scene.train is not None and scene.test is not None:
        return list(scene.train), list(scene.test)
    test = names[::holdout_every]
    return [n for n in names if n not in set(test)], test


def camera_spread(poses: np.ndarray) -> float:
    """RMS distance of camera centres from their mean: the unit of translation noise."""
    centres = poses[:, :3, 3]
    return float(np.sqrt(((centres - centres.mean(0)) ** 2).sum(-1).mean()))


def check_images(scene: Scene) -> None:
    """Every image exists, decodes whole and has its camera's size: a damaged view stops
    the scene here, not hours into training (a scan's views are its protocol: none is
    dropped)."""
    for view in scene.views:
        path = scene.image_path(view)
        check_size(path, decode_image(path).size, view.camera)


def prepare(fmt: str, root: Path, out: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Write the prepared scene to ``out`` and return a summary for the log."""
    scene = read_source(fmt, root, settings)
    check_images(scene)
    train, test = split_views(scene, int(settings["holdout_every"]))
    if not train or not test:
        raise InputError(root, f"{len(scene.views)} views: too few for a train/test split")
    noise = settings["noise"]
    by_name = {v.file_path: v for v in scene.views}
    train_views = [by_name[n] for n in train]
    truth = np.stack([v.c2w for v in train_views])
    spread = camera_spread(truth)
    noisy = perturb_poses(
        truth, noise["rotation_deg"], noise["translation"] * spread, int(noise["seed"])
    )
    moved = dict(zip(train, noisy, strict=True))
    views = [with_ground_truth(v, moved.get(v.file_path, v.c2w)) for v in scene.views]
    prepared = Scene(scene.root, views, train, test)
    write_transforms(out, prepared)
    return {"views": len(views), "train": len(train), "test": len(test), "spread": spread}
