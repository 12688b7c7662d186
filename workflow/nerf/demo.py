"""The demo scene on disk, in the layout of a real dataset (``format``): nerfstudio
(``transforms.json`` + ``images/``), DTU (``cameras_sphere.npz`` + ``image/``) or Replica
(``traj.txt`` + ``results/``). The exact poses are kept in ``poses_gt.npy``; ``manifest.json``
is written last and marks completion."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from workflow.common.atomic import write_json
from workflow.nerf.dtu import write_dtu
from workflow.nerf.replica import write_replica
from workflow.nerf.scene import default_scene, orbit_poses, render
from workflow.nerf.transforms import Intrinsics, Scene, View, write_transforms

# Where the demo's DTU scan puts its normalised frame in a made-up world (scale and shift),
# so the conversion has a real scale_mat to undo.
DTU_SCALE_MAT = np.array([[2.5, 0, 0, 10.0], [0, 2.5, 0, -4.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


def demo_camera(size: int, fov_deg: float) -> Intrinsics:
    focal = size / (2 * math.tan(math.radians(fov_deg) / 2))
    return Intrinsics(focal, focal, size / 2, size / 2, size, size)


def write_demo(root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Render ``views`` images of the demo scene from an orbit and write them as
    ``settings['format']``; returns the manifest."""
    root = Path(root)
    camera = demo_camera(settings["image_size"], settings["fov_deg"])
    poses = orbit_poses(settings["views"], settings["radius"], settings["seed"])
    solids = default_scene()
    images = [render(solids, p, camera.width, camera.height, camera.fx) for p in poses]
    fmt = settings["format"]
    if fmt == "nerfstudio":
        (root / "images").mkdir(parents=True, exist_ok=True)
        views = []
        for index, (image, pose) in enumerate(zip(images, poses, strict=True)):
            name = f"images/{index:03d}.png"
            rgb = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(rgb).save(root / name)
            views.append(View(file_path=name, c2w=pose, camera=camera))
        write_transforms(root / "transforms.json", Scene(root, views))
    elif fmt == "dtu":
        write_dtu(root, images, poses, camera, DTU_SCALE_MAT)
    elif fmt == "replica":
        write_replica(root, images, poses)
    else:
        raise ValueError(f"unknown demo format {fmt!r}")
    np.save(root / "poses_gt.npy", poses)
    manifest = {
        "format": fmt,
        "views": len(poses),
        "camera": camera.as_dict(),
        "scene_radius": settings["radius"],
    }
    write_json(root / "manifest.json", manifest)
    return manifest
