"""DisNet with a residual head: a worked plug-in variant of the distance track.

DisNet's head is a plain 3-layer SELU MLP on the box geometry. This variant keeps its input
(the same six standardised box features, ``inputs = "geometry"``) and its loss, and changes the
head: a wider first layer and two residual SELU blocks, so the head can keep the near-linear
pinhole relation (distance ~ f * H / h) on its skip path while the blocks learn the
corrections.

Use it from the config, with nothing else changed:

    distance:
      experiments:
        residual_head: {model: variants/distance/residual_head.py:ResidualHeadDisNet}
"""

from __future__ import annotations

from typing import Any

from torch import nn

from workflow.distance.models import GEOMETRY_DIM, DisNet


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.SELU(), nn.Linear(width, width))

    def forward(self, x):
        return nn.functional.selu(x + self.body(x))


class ResidualHeadDisNet(DisNet):
    """DisNet's inputs, loss and optimiser; a residual head in place of its MLP."""

    def __init__(self, hidden: int = 128, blocks: int = 2, **common: Any) -> None:
        super().__init__(hidden=hidden, **common)
        self.mlp = nn.Sequential(
            nn.Linear(GEOMETRY_DIM, hidden),
            nn.SELU(),
            *(ResidualBlock(hidden) for _ in range(blocks)),
            nn.Linear(hidden, 1),
        )
