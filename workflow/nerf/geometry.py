"""Camera geometry shared by every NeRF stage: axis conventions, rotations, pose noise and
the Sim(3) alignment that pose errors are measured after.

Poses are 4x4 camera-to-world matrices in the OpenGL convention nerfstudio uses (+X right,
+Y up, the camera looks along -Z). DTU and Replica store OpenCV poses (+Y down, +Z forward).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Camera-frame flip between OpenCV and OpenGL axes: the same matrix both ways.
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """An OpenCV camera-to-world pose (or a stack of them) in OpenGL axes: the camera's Y and Z
    axes flip, its centre stays."""
    return np.asarray(c2w, dtype=np.float64) @ CV_TO_GL


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation vectors (..., 3) -> rotation matrices (..., 3, 3), with a Taylor
    expansion near zero so the gradient at the identity (where corrections start) is exact."""
    theta2 = (omega * omega).sum(-1, keepdim=True)[..., None]
    theta = theta2.clamp_min(1e-12).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    k = skew(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def rotation_angle_deg(r: np.ndarray) -> np.ndarray:
    """Angle of rotation matrices (..., 3, 3), in degrees."""
    cos = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def perturb_poses(
    c2w: np.ndarray, rotation_deg: float, translation: float, seed: int
) -> np.ndarray:
    """BARF's noise: each pose composed, in its own camera frame, with a random rotation of
    normally distributed angle (std ``rotation_deg``, uniform axis) and a normally distributed
    translation (std ``translation`` per axis, scene units). Seeded, so reruns agree."""
    rng = np.random.default_rng(seed)
    n = len(c2w)
    omega = rng.normal(size=(n, 3)) * math.radians(rotation_deg) / math.sqrt(3)
    delta = np.tile(np.eye(4), (n, 1, 1))
    delta[:, :3, :3] = so3_exp(torch.from_numpy(omega)).numpy()
    delta[:, :3, 3] = rng.normal(size=(n, 3)) * translation
    return np.asarray(c2w, dtype=np.float64) @ delta


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (scale s, rotation R, translation t) minimising |s R x + t - y|^2 over point
    pairs (Umeyama 1991): how camera centres of a run are mapped onto the ground truth."""
    mu_x, mu_y = source.mean(0), target.mean(0)
    x, y = source - mu_x, target - mu_y
    cov = y.T @ x / len(source)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rot = u @ sign @ vt
    var_x = (x * x).sum() / len(source)
    scale = float(np.trace(np.diag(d) @ sign) / var_x) if var_x > 0 else 1.0
    return scale, rot, mu_y - scale * rot @ mu_x


def align_poses(c2w: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Poses mapped into the reference's frame by the Sim(3) fitted to their camera centres;
    returns the aligned poses and the similarity (s, R, t)."""
    scale, rot, shift = umeyama(c2w[:, :3, 3], reference[:, :3, 3])
    aligned = np.array(c2w, dtype=np.float64)
    aligned[:, :3, :3] = rot @ aligned[:, :3, :3]
    aligned[:, :3, 3] = (scale * (rot @ c2w[:, :3, 3].T)).T + shift
    return aligned, (scale, rot, shift)


def pose_errors(c2w: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pose rotation error (degrees) and camera-centre error (reference units) after the
    Sim(3) alignment, BARF's protocol for poses known only up to a similarity."""
    aligned, _ = align_poses(c2w, reference)
    rel = np.swapaxes(aligned[:, :3, :3], -1, -2) @ reference[:, :3, :3]
    return rotation_angle_deg(rel), np.linalg.norm(aligned[:, :3, 3] - reference[:, :3, 3], axis=-1)
