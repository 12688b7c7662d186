"""The demo's scene geometry: a pinhole camera, people in three poses, static occluders, and
what a detector would see of each person (the box of its visible part, its hidden joints).

Everything is drawn from axis-aligned rectangles in the image, so the frame that is rendered
and the boxes and visibility flags that are annotated come from the same shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workflow.distance.joints import HEIGHT_FRACTION, LATERAL_FRACTION, N_JOINTS

Colour = tuple[int, int, int]
#: One drawn shape: (x1, y1, x2, y2) in pixels, its colour, and whether it is drawn as an ellipse.
Shape = tuple[np.ndarray, Colour, bool]
PRIOR_WIDTH_OVER_HEIGHT = 0.55 / 1.75  # shoulder-to-shoulder span of a standing adult
SKIN: Colour = (224, 180, 150)


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    f: float
    height_m: float
    pitch: float  # radians, downwards

    @property
    def cx(self) -> float:
        return self.width / 2

    @property
    def cy(self) -> float:
        return self.height / 2

    @property
    def half_fov(self) -> float:
        return math.atan(self.width / 2 / self.f)

    def to_camera(self, level: np.ndarray) -> np.ndarray:
        """Level frame (X right, Y down, Z forward; camera at origin) -> pitched camera frame."""
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        x, y, z = level[..., 0], level[..., 1], level[..., 2]
        return np.stack([x, c * y - s * z, s * y + c * z], axis=-1)

    def project(self, cam: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                self.f * cam[..., 0] / cam[..., 2] + self.cx,
                self.f * cam[..., 1] / cam[..., 2] + self.cy,
            ],
            axis=-1,
        )


@dataclass(frozen=True)
class Pose:
    """Joint heights above the ground and lateral offsets, as fractions of stature, and the
    body parts drawn over them: (joints, horizontal and vertical padding in stature, colour)."""

    up: np.ndarray
    side: np.ndarray
    parts: tuple[tuple[tuple[int, ...], float, float, str], ...]


_HEAD = ((0, 2), 0.055, 0.0, "skin")
_TORSO = ((3, 4, 7, 8, 11, 16, 19), 0.02, 0.0, "shirt")
_ARMS = (((4, 5, 6), 0.025, 0.02, "shirt"), ((8, 9, 10), 0.025, 0.02, "shirt"))
# Sitting and crouching people are seen side-on, legs folded towards +x: shorter and
# relatively wider boxes than standing ones.
_FOLDED_LEGS = (
    ((16, 17), 0.03, 0.035, "trousers"),
    ((19, 20), 0.03, 0.035, "trousers"),
    ((17, 18), 0.035, 0.0, "trousers"),
    ((20, 21), 0.035, 0.0, "trousers"),
)
POSES = {
    "stand": Pose(
        HEIGHT_FRACTION,
        LATERAL_FRACTION * PRIOR_WIDTH_OVER_HEIGHT,
        (
            _HEAD,
            _TORSO,
            *_ARMS,
            ((16, 17, 18), 0.035, 0.0, "trousers"),
            ((19, 20, 21), 0.035, 0.0, "trousers"),
        ),
    ),
    "sit": Pose(  # on a seat 0.27 stature high, thighs level, shins vertical: 0.74 tall
        np.array(
            [0.74, 0.69, 0.62, 0.60, 0.58, 0.44, 0.33, 0.60, 0.58, 0.44, 0.33]
            + [0.30, 0.35, 0.42, 0.49, 0.55, 0.27, 0.28, 0.03, 0.27, 0.28, 0.03]
        ),
        np.array(
            [0.03, 0.03, 0.01, 0.00, -0.01, 0.03, 0.14, 0.02, 0.03, 0.06, 0.17]
            + [-0.02, -0.02, -0.015, -0.01, 0.00, -0.02, 0.25, 0.27, 0.00, 0.27, 0.29]
        ),
        (_HEAD, _TORSO, *_ARMS, *_FOLDED_LEGS),
    ),
    "crouch": Pose(  # squatting, leaning forward: 0.58 tall
        np.array(
            [0.58, 0.53, 0.47, 0.45, 0.43, 0.33, 0.25, 0.45, 0.43, 0.33, 0.25]
            + [0.22, 0.27, 0.33, 0.38, 0.43, 0.20, 0.30, 0.03, 0.20, 0.30, 0.03]
        ),
        np.array(
            [0.12, 0.12, 0.10, 0.08, 0.07, 0.16, 0.24, 0.10, 0.11, 0.19, 0.27]
            + [-0.03, 0.00, 0.03, 0.05, 0.07, -0.04, 0.18, 0.08, -0.02, 0.20, 0.10]
        ),
        (_HEAD, _TORSO, *_ARMS, *_FOLDED_LEGS),
    ),
}


@dataclass
class Person:
    ped_id: int
    x: float  # level-frame ground position (metres)
    z: float
    vx: float
    vz: float
    stature: float
    pose: str
    spread: float  # lateral scale: body orientation, arms, clothes
    facing: int  # +1 or -1: mirrors the lateral offsets
    shirt: Colour
    trousers: Colour

    def joints_level(self, cam: Camera) -> np.ndarray:
        pose = POSES[self.pose]
        y = cam.height_m - pose.up * self.stature
        x = self.x + self.facing * self.spread * pose.side * self.stature
        return np.stack([x, y, np.full(N_JOINTS, self.z)], axis=-1)

    def shapes(self, joints: np.ndarray, uv: np.ndarray, cam: Camera) -> list[Shape]:
        """The body parts' rectangles in the image (camera-frame ``joints``, projected ``uv``)."""
        scale = cam.f * self.stature / float(joints[:, 2].mean())  # pixels per stature
        colours = {"skin": SKIN, "shirt": self.shirt, "trousers": self.trousers}
        out = []
        for index, pad_x, pad_y, colour in POSES[self.pose].parts:
            pts = uv[list(index)]
            rect = np.concatenate(
                [
                    pts.min(axis=0) - [pad_x * scale, pad_y * scale],
                    pts.max(axis=0) + [pad_x * scale, pad_y * scale],
                ]
            )
            out.append((rect, colours[colour], colour == "skin"))
        return out


@dataclass(frozen=True)
class Occluder:
    """A low wall: a billboard facing the camera at level-frame depth ``z``, standing on the
    ground."""

    x1: float
    x2: float
    z: float
    height: float
    colour: Colour

    def shapes(self, cam: Camera) -> list[Shape]:
        corners = np.array(
            [[x, cam.height_m - h, self.z] for x in (self.x1, self.x2) for h in (self.height, 0)],
            float,
        )
        uv = cam.project(cam.to_camera(corners))
        return [(np.concatenate([uv.min(axis=0), uv.max(axis=0)]), self.colour, False)]

    def depth(self, cam: Camera) -> float:
        centre = np.array([(self.x1 + self.x2) / 2, cam.height_m - self.height / 2, self.z])
        return float(cam.to_camera(centre)[2])


def _inside(points: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(points, rects) -> (points,) True where a point lies in any rectangle."""
    if len(rects) == 0:
        return np.zeros(len(points), bool)
    x, y = points[:, 0:1], points[:, 1:2]
    return ((x >= rects[:, 0]) & (x <= rects[:, 2]) & (y >= rects[:, 1]) & (y <= rects[:, 3])).any(
        axis=1
    )


def clip_to_frame(rects: np.ndarray, width: int, height: int) -> np.ndarray:
    """The parts of ``rects`` inside the frame; empty ones dropped."""
    clipped = np.column_stack(
        [
            rects[:, 0].clip(0, width),
            rects[:, 1].clip(0, height),
            rects[:, 2].clip(0, width),
            rects[:, 3].clip(0, height),
        ]
    )
    return clipped[(clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])]


def visible_box(
    own: np.ndarray, covers: np.ndarray, width: int, height: int, grid: tuple[int, int] = (96, 48)
) -> np.ndarray | None:
    """Box (x1, y1, x2, y2) of what can be seen of a body: its parts' rectangles ``own``,
    less what nearer ``covers`` hide and what the frame cuts; None if nothing is seen.

    The body is sampled on a ``grid`` (rows, columns) over its in-frame extent, so an unhidden
    edge is exact and a hidden one is placed to within one cell.
    """
    own = clip_to_frame(own, width, height)
    if len(own) == 0:
        return None
    x1, y1 = own[:, 0].min(), own[:, 1].min()
    x2, y2 = own[:, 2].max(), own[:, 3].max()
    rows, cols = grid
    ys = y1 + (np.arange(rows) + 0.5) * (y2 - y1) / rows
    xs = x1 + (np.arange(cols) + 0.5) * (x2 - x1) / cols
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    seen = (_inside(points, own) & ~_inside(points, covers)).reshape(rows, cols)
    if not seen.any():
        return None
    r = np.flatnonzero(seen.any(axis=1))
    c = np.flatnonzero(seen.any(axis=0))
    dx, dy = (x2 - x1) / cols, (y2 - y1) / rows
    return np.array([x1 + c[0] * dx, y1 + r[0] * dy, x1 + (c[-1] + 1) * dx, y1 + (r[-1] + 1) * dy])


def joint_flags(uv: np.ndarray, covers: np.ndarray, width: int, height: int) -> np.ndarray:
    """MOTSynth's per-joint flags: 2 visible, 1 hidden (behind something nearer, or outside
    the frame)."""
    in_frame = (uv[:, 0] >= 0) & (uv[:, 0] <= width) & (uv[:, 1] >= 0) & (uv[:, 1] <= height)
    return np.where(in_frame & ~_inside(uv, covers), 2, 1)
