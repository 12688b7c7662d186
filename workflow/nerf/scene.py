"""The demo scene: a few textured solids ray-traced analytically from known poses.

Colour varies smoothly but quickly over every surface (sinusoidal stripes in world
coordinates), so a pixel's colour pins down where its ray hits: the planted signal that lets
photometric pose refinement work, and lets a wrong pose show up as a lower PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BACKGROUND = 0.0  # black: rays that miss every solid


@dataclass(frozen=True)
class Sphere:
    centre: tuple[float, float, float]
    radius: float
    frequency: float
    phase: float


@dataclass(frozen=True)
class Box:
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    frequency: float
    phase: float


def default_scene() -> list[Sphere | Box]:
    return [
        Sphere((0.0, 0.0, 0.25), 0.55, 7.0, 0.0),
        Sphere((0.6, -0.45, -0.1), 0.3, 11.0, 1.3),
        Sphere((-0.55, 0.5, -0.15), 0.3, 9.0, 2.1),
        Box((-1.2, -1.2, -0.6), (1.2, 1.2, -0.4), 5.0, 0.7),
    ]


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world pose at ``eye`` looking at ``target`` (camera -Z forward)."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w


def orbit_poses(views: int, radius: float, seed: int) -> np.ndarray:
    """Cameras around the scene: azimuth evenly spaced with seeded jitter, elevation 20-55
    degrees, all looking at the origin."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(views):
        azimuth = 2 * math.pi * (i + rng.uniform(-0.3, 0.3)) / views
        elevation = math.radians(rng.uniform(20, 55))
        eye = radius * np.array(
            [
                math.cos(elevation) * math.cos(azimuth),
                math.cos(elevation) * math.sin(azimuth),
                math.sin(elevation),
            ]
        )
        poses.append(look_at(eye, np.zeros(3)))
    return np.stack(poses)


def pixel_rays(
    c2w: np.ndarray, width: int, height: int, focal: float
) -> tuple[np.ndarray, np.ndarray]:
    """World-space origins and unit directions of every pixel centre, (H, W, 3) each."""
    i, j = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    dirs = np.stack([(i - width / 2) / focal, -(j - height / 2) / focal, -np.ones_like(i)], axis=-1)
    world = dirs @ c2w[:3, :3].T
    world /= np.linalg.norm(world, axis=-1, keepdims=True)
    return np.broadcast_to(c2w[:3, 3], world.shape), world


def _texture(points: np.ndarray, frequency: float, phase: float) -> np.ndarray:
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return 0.5 + 0.45 * np.stack(
        [
            np.sin(frequency * (x + 0.5 * z) + phase),
            np.sin(frequency * (y - 0.3 * x) + phase + 2.0),
            np.sin(frequency * (z + 0.4 * y) + phase + 4.0),
        ],
        axis=-1,
    )


def _hit_sphere(origins, dirs, s: Sphere):
    oc = origins - np.asarray(s.centre)
    b = (oc * dirs).sum(-1)
    c = (oc * oc).sum(-1) - s.radius**2
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0))
    t = np.where((disc > 0) & (t > 0), t, np.inf)
    points = origins + np.where(np.isfinite(t), t, 0)[..., None] * dirs
    normals = (points - np.asarray(s.centre)) / s.radius
    return t, normals


def _hit_box(origins, dirs, b: Box):
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (np.asarray(b.low) - origins) / dirs
        t1 = (np.asarray(b.high) - origins) / dirs
    near = np.minimum(t0, t1)
    t_near, t_far = near.max(-1), np.maximum(t0, t1).min(-1)
    t = np.where((t_near < t_far) & (t_near > 0), t_near, np.inf)
    axis = near.argmax(-1)
    normals = np.zeros_like(dirs)
    np.put_along_axis(
        normals, axis[..., None], -np.sign(np.take_along_axis(dirs, axis[..., None], -1)), -1
    )
    return t, normals


def render(
    solids: list[Sphere | Box], c2w: np.ndarray, width: int, height: int, focal: float
) -> np.ndarray:
    """An (H, W, 3) float image in [0, 1]: nearest hit, textured, Lambert + ambient light."""
    origins, dirs = pixel_rays(c2w, width, height, focal)
    best = np.full(dirs.shape[:-1], np.inf)
    colour = np.full(dirs.shape, BACKGROUND)
    light = np.array([0.4, -0.3, 0.85])
    light /= np.linalg.norm(light)
    for solid in solids:
        hit = _hit_sphere if isinstance(solid, Sphere) else _hit_box
        t, normals = hit(origins, dirs, solid)
        nearer = t < best
        points = origins + np.where(nearer, t, 0)[..., None] * dirs
        shade = 0.55 + 0.45 * np.clip((normals * light).sum(-1), 0, 1)
        value = _texture(points, solid.frequency, solid.phase) * shade[..., None]
        colour = np.where(nearer[..., None], value, colour)
        best = np.where(nearer, t, best)
    return np.clip(colour, 0, 1)
