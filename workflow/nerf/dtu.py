"""DTU as NeuS/IDR ship it: ``image/NNN.png``, ``mask/NNN.png`` and ``cameras_sphere.npz``
(``world_mat_i`` = K [R|t] projecting world points, ``scale_mat_i`` mapping the unit sphere
around the object into the world).

P = world_mat @ scale_mat projects points of the normalised (unit-sphere) frame; decomposed
into K and an OpenCV camera-to-world pose, then flipped to OpenGL axes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import scipy.linalg
from PIL import Image

from workflow.common.errors import InputError
from workflow.common.images import image_size
from workflow.nerf.geometry import opencv_to_opengl
from workflow.nerf.transforms import Intrinsics, View


def decompose_projection(projection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K (3x3, K[2,2] = 1) and the OpenCV camera-to-world pose (4x4) of a 3x4 projection
    matrix known up to scale (of either sign). Raises ValueError if it is not invertible."""
    p = np.asarray(projection, dtype=np.float64)[:3, :4]
    m = p[:, :3]
    det = np.linalg.det(m)
    if not np.isfinite(det) or abs(det) <= 1e-12 * max(np.abs(m).max(), 1e-300) ** 3:
        raise ValueError(f"camera matrix is not invertible (det {det:.3g})")
    if det < 0:  # P and -P project alike; pick the sign with a proper rotation
        p, m = -p, -m
    k, r = scipy.linalg.rq(m)
    signs = np.diag(np.sign(np.diag(k)))
    k, r = k @ signs, signs @ r  # positive focal lengths; signs @ signs = I
    t = np.linalg.solve(k, p[:, 3])
    c2w = np.eye(4)
    c2w[:3, :3] = r.T
    c2w[:3, 3] = -r.T @ t
    return k / k[2, 2], c2w


def read_dtu(root: Path) -> list[View]:
    """Every image of a DTU scan with its camera, in OpenGL axes, file paths relative to
    ``root``; a missing or malformed camera file or matrix is an InputError."""
    cameras_file = root / "cameras_sphere.npz"
    images = sorted((root / "image").glob("*.png"))
    if not images:
        raise InputError(root / "image", "no PNG images")
    if not cameras_file.is_file():
        raise InputError(cameras_file, "camera file not found")
    try:
        cameras = dict(np.load(cameras_file))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(cameras_file, f"not a readable .npz file: {err}") from None
    views = []
    for index, image in enumerate(images):
        where = f"{image.relative_to(root)}"
        try:
            world, scale = cameras[f"world_mat_{index}"], cameras[f"scale_mat_{index}"]
        except KeyError as err:
            raise InputError(cameras_file, f"no {err.args[0]} for {where}") from None
        if world.shape != (4, 4) or scale.shape != (4, 4):
            raise InputError(cameras_file, f"world_mat_{index}/scale_mat_{index} are not 4x4")
        try:
            k, c2w = decompose_projection((world @ scale)[:3])
        except ValueError as err:
            raise InputError(
                cameras_file, f"world_mat_{index} @ scale_mat_{index}: {err}"
            ) from None
        width, height = image_size(image)
        mask = root / "mask" / image.name
        views.append(
            View(
                file_path=where,
                c2w=opencv_to_opengl(c2w),
                camera=Intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], width, height),
                mask_path=str(mask.relative_to(root)) if mask.is_file() else None,
            )
        )
    return views


def write_dtu(
    root: Path,
    images: list[np.ndarray],
    poses: np.ndarray,
    camera: Intrinsics,
    scale_mat: np.ndarray,
) -> None:
    """A scan in DTU's layout (the demo's way to exercise :func:`read_dtu`): OpenGL poses of
    the normalised frame, ``scale_mat`` mapping it into the (made-up) world frame."""
    from workflow.nerf.geometry import CV_TO_GL

    (root / "image").mkdir(parents=True, exist_ok=True)
    k = np.array(
        [[camera.fx, 0, camera.cx, 0], [0, camera.fy, camera.cy, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    mats = {}
    for index, (image, pose) in enumerate(zip(images, poses, strict=True)):
        w2c = np.linalg.inv(pose @ CV_TO_GL)  # OpenCV world-to-camera in the normalised frame
        mats[f"world_mat_{index}"] = k @ w2c @ np.linalg.inv(scale_mat)
        mats[f"scale_mat_{index}"] = scale_mat
        Image.fromarray(_to_uint8(image)).save(root / "image" / f"{index:03d}.png")
    np.savez(root / "cameras_sphere.npz", **mats)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
