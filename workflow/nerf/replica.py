"""Replica as NICE-SLAM ships it: ``results/frameNNNNNN.jpg`` (and ``depthNNNNNN.png``, scale
6553.5) with ``traj.txt``, one row-major 4x4 OpenCV camera-to-world pose per line. The camera
is not in the files: every sequence is 1200x680 with f = 600 (config ``camera``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from workflow.common.errors import InputError
from workflow.nerf.geometry import CV_TO_GL, opencv_to_opengl
from workflow.nerf.transforms import Intrinsics, View

NICE_SLAM_CAMERA = Intrinsics(600.0, 600.0, 599.5, 339.5, 1200, 680)


def read_trajectory(path: Path) -> np.ndarray:
    """(n, 4, 4) OpenCV poses of ``traj.txt``; a line that is not 16 numbers is an
    InputError naming it."""
    if not path.is_file():
        raise InputError(path, "trajectory file not found")
    poses = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 16:
            raise InputError(path, f"line {number}: expected 16 numbers, found {len(fields)}")
        try:
            values = np.array([float(f) for f in fields])
        except ValueError:
            raise InputError(
                path, f"line {number}: not a number in {line.strip()[:60]!r}"
            ) from None
        if not np.isfinite(values).all():
            raise InputError(path, f"line {number}: non-finite value")
        poses.append(values.reshape(4, 4))
    if not poses:
        raise InputError(path, "no poses")
    return np.stack(poses)


def read_replica(root: Path, camera: Intrinsics, stride: int) -> list[View]:
    """Every ``stride``-th frame of a sequence with its pose in OpenGL axes."""
    poses = read_trajectory(root / "traj.txt")
    views = []
    for index in range(0, len(poses), stride):
        name = f"results/frame{index:06d}.jpg"
        views.append(View(file_path=name, c2w=opencv_to_opengl(poses[index]), camera=camera))
    return views


def write_replica(root: Path, images: list[np.ndarray], poses: np.ndarray) -> None:
    """A sequence in NICE-SLAM's layout (the demo's way to exercise :func:`read_replica`)."""
    (root / "results").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (image, pose) in enumerate(zip(images, poses, strict=True)):
        rgb = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "results" / f"frame{index:06d}.jpg", quality=95)
        lines.append(" ".join(f"{x:.10g}" for x in (pose @ CV_TO_GL).ravel()))
    (root / "traj.txt").write_text("\n".join(lines) + "\n")
