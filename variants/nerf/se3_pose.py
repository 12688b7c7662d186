"""Pose corrections on SE(3): a worked plug-in variant of the NeRF track's ``pose`` setting.

The built-in correction (nerfstudio's ``SO3xR3``) moves each camera by a rotation vector and a
separate translation. This variant takes one twist xi = (omega, u) per view and applies its
exponential map on SE(3): R = exp(omega^) (Rodrigues) and t = V(omega) u, with
V = I + (1 - cos th)/th^2 omega^ + (th - sin th)/th^3 (omega^)^2, so rotation and translation
move together along a screw (BARF's se(3) parameterisation, Lin et al., ICCV 2021; nerfstudio's
``CameraOptimizerConfig(mode="SE3")``, ``nerfstudio.cameras.lie_groups.exp_map_SE3``, which
orders the twist u first). Like the built-in it acts in the camera's own frame and starts at
zero (the given poses); on the demo it refines as well as SO3xR3 (8 degrees of noise are small
enough for the two to move alike), which is what an exact exponential map should do.

Use it from the config, with nothing else changed (builtin engine):

    nerf:
      experiments:
        se3: {pose: "variants/nerf/se3_pose.py:SE3Correction"}
"""

from __future__ import annotations

import torch
from torch import nn

from workflow.nerf.field import PoseCorrection
from workflow.nerf.geometry import skew, so3_exp


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """Twists (n, 6: rotation omega, then u) -> rigid transforms (n, 3, 4) = [R | V u]."""
    omega, u = xi[:, :3], xi[:, 3:]
    theta2 = (omega * omega).sum(-1)[:, None, None]
    theta = theta2.clamp_min(1e-12).sqrt()
    small = theta2 < 1e-8  # Taylor terms: exact values and gradients at the identity
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    c = torch.where(
        small, 1 / 6 - theta2 / 120, (theta - torch.sin(theta)) / (theta2 * theta).clamp_min(1e-18)
    )
    k = skew(omega)
    v = torch.eye(3, dtype=xi.dtype, device=xi.device) + b * k + c * (k @ k)
    return torch.cat([so3_exp(omega), v @ u[:, :, None]], dim=-1)


class SE3Correction(PoseCorrection):
    """One se(3) twist per training view, composed on the right of its pose: c2w @ exp(xi)."""

    def __init__(self, views: int) -> None:
        super().__init__(views)
        self.twist = nn.Parameter(torch.zeros(views, 6))

    def forward(self, c2w: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        delta = se3_exp(self.twist[index])
        rot = c2w[:, :3, :3] @ delta[:, :, :3]
        trans = c2w[:, :3, 3:] + c2w[:, :3, :3] @ delta[:, :, 3:]
        return torch.cat([rot, trans], dim=-1)
