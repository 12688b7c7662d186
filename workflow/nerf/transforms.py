"""nerfstudio's ``transforms.json``: the one scene format every NeRF stage reads and writes.

A scene is a folder with ``transforms.json`` whose frames name images relative to it: global
intrinsics (``fl_x fl_y cx cy w h``, a frame may override them), a 4x4 OpenGL camera-to-world
``transform_matrix`` per frame, and optional ``train_filenames``/``test_filenames`` splits.
Prepared scenes add ``gt_transform_matrix`` to a frame whose pose was perturbed (nerfstudio
ignores keys it does not know).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from workflow.common.atomic import write_json
from workflow.common.errors import InputError
from workflow.common.images import decode_image

CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def scaled(self, factor: float) -> Intrinsics:
        """The same camera for images resized by ``factor`` (pixel centres kept aligned)."""
        width, height = round(self.width * factor), round(self.height * factor)
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def as_dict(self) -> dict[str, float | int]:
        return dict(
            zip(
                CAMERA_KEYS,
                (self.fx, self.fy, self.cx, self.cy, self.width, self.height),
                strict=True,
            )
        )


@dataclass(frozen=True)
class View:
    """One frame: its image path as the file names it, pose, camera, and (when a stage
    perturbed the pose) the ground truth."""

    file_path: str
    c2w: np.ndarray
    camera: Intrinsics
    gt_c2w: np.ndarray | None = None
    mask_path: str | None = None


@dataclass
class Scene:
    root: Path  # folder of transforms.json: frame paths are relative to it
    views: list[View]
    train: list[str] | None = None  # file paths of the splits, when the file sets them
    test: list[str] | None = None

    def image_path(self, view: View) -> Path:
        return self.root / view.file_path

    def split(self, name: str) -> list[View]:
        names = set(self.train if name == "train" else self.test or [])
        return [v for v in self.views if v.file_path in names]


def check_pose(matrix: Any, where: str, path: Path) -> np.ndarray:
    """A 4x4 (or 3x4) finite pose with an invertible rotation part, as a 4x4 float array."""
    try:
        pose = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{where}: transform_matrix is not a matrix of numbers") from None
    if pose.shape == (3, 4):
        pose = np.vstack([pose, [0, 0, 0, 1]])
    if pose.shape != (4, 4):
        raise InputError(path, f"{where}: transform_matrix is {pose.shape}, not 4x4")
    if not np.isfinite(pose).all():
        raise InputError(path, f"{where}: transform_matrix has non-finite values")
    det = float(np.linalg.det(pose[:3, :3]))
    if abs(det) < 1e-6:
        raise InputError(path, f"{where}: camera matrix is not invertible (det {det:.3g})")
    return pose


def _camera(frame: dict, top: dict, where: str, path: Path) -> Intrinsics:
    values = []
    for key in CAMERA_KEYS:
        value = frame.get(key, top.get(key))
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise InputError(path, f"{where}: no valid {key!r} (neither the frame nor the file)")
        values.append(value)
    fx, fy, cx, cy, w, h = values
    if fx <= 0 or fy <= 0 or w < 1 or h < 1:
        raise InputError(path, f"{where}: focal lengths and image size must be positive")
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(w), int(h))


def read_transforms(path: str | PathLike[str]) -> Scene:
    """A scene from its ``transforms.json``; anything malformed is an InputError naming the
    frame. Image files are checked when they are loaded (:func:`load_image`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "transforms.json not found")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(path, "no 'frames' list")
    views = []
    for number, frame in enumerate(frames):
        where = f"frame {number}"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise InputError(path, f"{where}: no 'file_path'")
        where = f"frame {number} ({frame['file_path']})"
        if "transform_matrix" not in frame:
            raise InputError(path, f"{where}: no 'transform_matrix'")
        gt = frame.get("gt_transform_matrix")
        views.append(
            View(
                file_path=frame["file_path"],
                c2w=check_pose(frame["transform_matrix"], where, path),
                camera=_camera(frame, meta, where, path),
                gt_c2w=None if gt is None else check_pose(gt, where, path),
                mask_path=frame.get("mask_path"),
            )
        )
    names = [v.file_path for v in views]
    if len(set(names)) != len(names):
        raise InputError(path, "two frames name the same image")
    splits = {}
    for split in ("train", "test"):
        listed = meta.get(f"{split}_filenames")
        if listed is not None:
            unknown = sorted(set(listed) - set(names))
            if unknown:
                raise InputError(path, f"{split}_filenames lists {unknown[0]!r}, not a frame")
        splits[split] = listed
    return Scene(path.parent, views, splits["train"], splits["test"])


def _matrix(pose: np.ndarray) -> list[list[float]]:
    return [[float(x) for x in row] for row in pose]


def write_transforms(path: str | PathLike[str], scene: Scene) -> None:
    """The scene as nerfstudio reads it: shared intrinsics at the top when every view has the
    same camera, else per frame; file paths relative to ``path``'s folder."""
    path = Path(path)
    cameras = {v.camera for v in scene.views}
    shared = next(iter(cameras)) if len(cameras) == 1 else None
    meta: dict[str, Any] = {"camera_model": "OPENCV"}
    if shared:
        meta.update(shared.as_dict())
    frames = []
    for view in scene.views:
        frame: dict[str, Any] = {
            "file_path": _relative(scene.root / view.file_path, path.parent),
            "transform_matrix": _matrix(view.c2w),
        }
        if view.mask_path:
            frame["mask_path"] = _relative(scene.root / view.mask_path, path.parent)
        if shared is None:
            frame.update(view.camera.as_dict())
        if view.gt_c2w is not None:
            frame["gt_transform_matrix"] = _matrix(view.gt_c2w)
        frames.append(frame)
    meta["frames"] = frames
    relative = {v.file_path: f["file_path"] for v, f in zip(scene.views, frames, strict=True)}
    for split, names in (("train", scene.train), ("val", scene.test), ("test", scene.test)):
        if names is not None:
            meta[f"{split}_filenames"] = [relative[n] for n in names]
    write_json(path, meta)


def _relative(target: Path, start: Path) -> str:
    # abspath, not resolve: a linked image keeps its own name (nerfstudio's images_N/ use it)
    return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(start))).as_posix()


def check_size(path: Path, size: tuple[int, int], camera: Intrinsics) -> None:
    """An image of another size than its camera is an InputError naming it."""
    if size != (camera.width, camera.height):
        raise InputError(
            path, f"image is {size[0]}x{size[1]} but its camera says {camera.width}x{camera.height}"
        )


def load_image(path: Path, camera: Intrinsics, factor: float = 1.0) -> np.ndarray:
    """An RGB image as float32 (H, W, 3) in [0, 1], resized by ``factor``; a missing or
    unreadable file, or one whose size is not the camera's, is an InputError."""
    rgb = decode_image(path)
    check_size(path, rgb.size, camera)
    if factor != 1.0:
        size = camera.scaled(factor)
        rgb = rgb.resize((size.width, size.height), Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def load_views(
    scene: Scene, views: Sequence[View], factor: float = 1.0
) -> tuple[np.ndarray, list[Intrinsics]]:
    """Images of ``views`` stacked (all must end up the same size) and their cameras."""
    images, cameras = [], []
    for view in views:
        images.append(load_image(scene.image_path(view), view.camera, factor))
        cameras.append(view.camera.scaled(factor) if factor != 1.0 else view.camera)
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        first, other = images[0].shape, next(s for s in sizes if s != images[0].shape)
        odd = next(v for v, im in zip(views, images, strict=True) if im.shape == other)
        raise InputError(
            scene.image_path(odd),
            f"image is {other[1]}x{other[0]} but the scene's first image is {first[1]}x{first[0]}",
        )
    return np.stack(images), cameras


def with_ground_truth(view: View, pose: np.ndarray) -> View:
    """The view moved to ``pose``, its current pose kept as ground truth (unless it has one)."""
    return replace(view, c2w=pose, gt_c2w=view.c2w if view.gt_c2w is None else view.gt_c2w)
