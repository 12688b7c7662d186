"""The builtin engine's model: a small radiance field whose encoding is faded in coarse to
fine (BARF), learnable per-view pose corrections, and volume rendering inside the scene box.

Two encodings share BARF's schedule: ``frequency`` (BARF's sin/cos bands; a wide MLP learns
slowly on a CPU) and ``grid`` (dense multi-resolution feature grids, coarse levels first, as
hash-grid variants of BARF do; reaches the demo's accuracy in a few hundred steps on a CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workflow.common.variants import is_variant, load_variant
from workflow.nerf.geometry import so3_exp


def coarse_to_fine(progress: float | None, bands: int, device=None) -> torch.Tensor:
    """BARF's weights of ``bands`` encoding bands (eq. 10): band k fades in while
    ``progress * bands`` goes from k to k + 1; None (no schedule) weighs every band 1."""
    if progress is None:
        return torch.ones(bands, device=device)
    k = torch.arange(bands, device=device, dtype=torch.float32)
    return (1 - torch.cos(torch.clamp(progress * bands - k, 0, 1) * math.pi)) / 2


class FrequencyEncoding(nn.Module):
    """x and sin/cos of x at ``bands`` octaves, band-weighted."""

    def __init__(self, bands: int) -> None:
        super().__init__()
        self.bands = bands
        self.register_buffer("freqs", (2.0 ** torch.arange(bands)) * math.pi, persistent=False)
        self.out_dim = 3 + 6 * bands

    def forward(self, x: torch.Tensor, progress: float | None) -> torch.Tensor:
        w = coarse_to_fine(progress, self.bands, x.device)
        angles = x[..., None] * self.freqs
        enc = torch.cat([torch.sin(angles) * w, torch.cos(angles) * w], dim=-1)
        return torch.cat([x, enc.flatten(-2)], dim=-1)


class GridEncoding(nn.Module):
    """Features trilinearly interpolated from dense grids of growing resolution
    (``base * 2**level`` cells a side) over the box [-1, 1]^3, level-weighted. The coarsest
    level is always on: the schedule starts one level in."""

    def __init__(self, levels: int, base: int, features: int) -> None:
        super().__init__()
        self.levels = levels
        self.grids = nn.ParameterList(
            nn.Parameter(torch.randn(1, features, r, r, r) * 1e-2)
            for r in (base * 2**level for level in range(levels))
        )
        self.out_dim = levels * features

    def forward(self, x: torch.Tensor, progress: float | None) -> torch.Tensor:
        if progress is not None:
            progress = min(1.0, progress + 1.0 / self.levels)
        w = coarse_to_fine(progress, self.levels, x.device)
        where = x.reshape(1, -1, 1, 1, 3)
        feats = [
            F.grid_sample(g, where, mode="bilinear", align_corners=True).flatten(2)[0].T * w[i]
            for i, g in enumerate(self.grids)
        ]
        return torch.cat(feats, dim=-1).reshape(*x.shape[:-1], self.out_dim)


class RadianceField(nn.Module):
    """Position in the scene box -> (density, colour). Colour does not depend on the viewing
    direction: the demo scene is matte, and the CPU budget is small."""

    def __init__(
        self, encoding: str = "grid", bands: int = 6, levels: int = 4, base: int = 8,
        features: int = 4, width: int = 64, depth: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        if encoding == "grid":
            self.encoding: nn.Module = GridEncoding(levels, base, features)
        elif encoding == "frequency":
            self.encoding = FrequencyEncoding(bands)
        else:
            raise ValueError(f"unknown encoding {encoding!r}")
        layers: list[nn.Module] = []
        size = self.encoding.out_dim
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU(inplace=True)]
            size = width
        self.mlp = nn.Sequential(*layers, nn.Linear(size, 4))

    def forward(
        self, points: torch.Tensor, progress: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(self.encoding(points, progress))
        return F.softplus(out[..., 0] - 1.0), torch.sigmoid(out[..., 1:])


class PoseCorrection(nn.Module):
    """Learnable per-view corrections of camera poses: the ``pose`` setting's extension point
    (workflow/common/variants.py). The built-in is :class:`SO3xR3`; a plug-in variant
    (``pose: <file>.py:<Class>``) subclasses this class and defines

    - ``__init__(self, views: int)``, calling ``super().__init__(views)``, with its parameters
      (one set per training view, or shared) initialised so that ``forward`` returns the given
      poses: a run with ``refine_poses: false`` keeps them, and the field learns first;
    - ``forward(self, c2w, index) -> (n, 3, 4)``: ``c2w`` (n, 3 or 4, 4) camera-to-world poses
      in box coordinates (OpenGL axes), ``index`` (n,) long, the view each row belongs to; the
      corrected poses, differentiable in the parameters.

    Training, the pose-error record and the evaluation's test-time alignment of the held-out
    views (a fresh instance of the same class) all build it this way. Builtin engine only."""

    def __init__(self, views: int) -> None:
        super().__init__()
        self.views = views


class SO3xR3(PoseCorrection):
    """One rotation vector and translation per training view (nerfstudio's SO3xR3), applied in
    the camera's own frame and initialised at zero, so an unrefined run keeps its poses."""

    def __init__(self, views: int) -> None:
        super().__init__(views)
        self.delta = nn.Parameter(torch.zeros(views, 6))

    def forward(self, c2w: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        d = self.delta[index]
        rot = c2w[:, :3, :3] @ so3_exp(d[:, :3])
        trans = c2w[:, :3, 3:] + c2w[:, :3, :3] @ d[:, 3:, None]
        return torch.cat([rot, trans], dim=-1)


#: The built-in pose parameterisations, by the ``pose`` setting's name.
POSES: dict[str, type[PoseCorrection]] = {"so3xr3": SO3xR3}
DEFAULT_POSE = "so3xr3"


def pose_class(pose: str) -> type[PoseCorrection]:
    """A built-in pose correction by name, or the plug-in variant ``pose`` names
    (``file.py:Class``, a PoseCorrection that defines ``forward``)."""
    if is_variant(pose):
        return load_variant("nerf", "pose", pose)
    return POSES[pose]


def make_corrections(settings: Mapping[str, Any], views: int) -> PoseCorrection:
    """The corrections of ``views`` poses a run's settings pick (``pose``; a checkpoint from
    before the setting existed used SO3xR3)."""
    return pose_class(settings.get("pose", DEFAULT_POSE))(views)


def camera_rays(
    c2w: torch.Tensor, pixels: torch.Tensor, intrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions of rays through ``pixels`` (n, 2: x, y; a pixel's centre
    at +0.5) of cameras ``c2w`` (n, 3, 4; OpenGL) with intrinsics (n, 4: fx, fy, cx, cy)."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    dirs = torch.stack(
        [(pixels[:, 0] - cx) / fx, -(pixels[:, 1] - cy) / fy, -torch.ones_like(fx)], dim=-1
    )
    world = (c2w[:, :3, :3] @ dirs[..., None])[..., 0]
    return c2w[:, :3, 3], F.normalize(world, dim=-1)


def box_interval(origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where rays enter and leave the box [-1, 1]^3 (slab test); near >= far for a miss."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-1 - origins) / safe, (1 - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def render_rays(
    field: RadianceField,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    samples: int,
    background: float,
    progress: float | None = None,
    jitter: bool = False,
) -> torch.Tensor:
    """Colours (n, 3) of rays in box coordinates (the scene box is [-1, 1]^3), compositing
    ``samples`` points between where each ray enters and leaves the box; stratified
    (jittered) while training, at bin centres otherwise."""
    near, far = box_interval(origins, dirs)
    span = (far - near).clamp_min(0)[:, None]
    bins = torch.arange(samples, device=origins.device, dtype=origins.dtype) / samples
    offset = torch.rand(len(origins), samples, device=origins.device) if jitter else 0.5
    t = near[:, None] + span * (bins + offset / samples)
    delta = span / samples
    points = (origins[:, None] + t[..., None] * dirs[:, None]).clamp(-1, 1)
    density, colour = field(points, progress)
    alpha = 1 - torch.exp(-density * delta)
    transmit = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)
    weights = alpha * transmit[:, :-1]
    rgb = (weights[..., None] * colour).sum(1)
    return rgb + (1 - weights.sum(-1, keepdim=True)) * background
