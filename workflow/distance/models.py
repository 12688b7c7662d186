"""DisNet and Zhu & Fang as LightningModules, and the two reference predictors.

Both networks regress distance in metres with an L1 loss. Inputs and targets are standardised
with training-set statistics stored in the checkpoint, which lets the published architectures
train in a few CPU minutes on the demo without changing what they compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torchvision
from torch import nn
from torchvision.ops import RoIAlign

from workflow.common.checkpoint import load_weights
from workflow.common.errors import InputError
from workflow.common.variants import is_variant, load_variant

GEOMETRY_DIM = 6


class DistanceModule(L.LightningModule):
    """Shared loss, optimiser, logging and standardisation: subclasses only say how a batch
    becomes metres (``forward``) and which batches they read (``inputs``: ``"geometry"``,
    DisNet's per-object box features, or ``"frames"``, whole frames with their boxes as Zhu &
    Fang read them). The extension point of a plug-in variant (workflow/common/variants.py)."""

    inputs: ClassVar[str] = "geometry"

    def __init__(
        self,
        lr: float,
        weight_decay: float,
        target_mean: float,
        target_std: float,
        feature_mean: Sequence[float],
        feature_std: Sequence[float],
        **_: Any,
    ) -> None:
        super().__init__()
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))
        self.register_buffer("feature_mean", torch.tensor(feature_mean, dtype=torch.float32))
        self.register_buffer("feature_std", torch.tensor(feature_std, dtype=torch.float32))

    def geometry(self, batch: dict[str, Any]) -> torch.Tensor:
        """DisNet's box features, standardised with training-set statistics."""
        return (batch["geometry"] - self.feature_mean) / self.feature_std

    def metres(self, standardised: torch.Tensor) -> torch.Tensor:
        return self.target_mean + self.target_std * standardised.squeeze(-1)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        pred = self(batch)
        loss = nn.functional.l1_loss(pred, batch["target"])
        self.log(
            f"{stage}_loss",
            loss,
            prog_bar=True,
            batch_size=len(batch["target"]),
            sync_dist=stage != "train",
        )
        return loss

    def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


class DisNet(DistanceModule):
    """MLP 6 -> 100 -> 100 -> 100 -> 1 with SELU on [H/h, W/w, D/d] + class priors."""

    def __init__(self, hidden: int = 100, model: str = "disnet", **common: Any) -> None:
        """``common``: DistanceModule's arguments (optimiser, standardisation statistics)."""
        super().__init__(**common)
        self.save_hyperparameters()
        self.mlp = nn.Sequential(
            nn.Linear(GEOMETRY_DIM, hidden),
            nn.SELU(),
            nn.Linear(hidden, hidden),
            nn.SELU(),
            nn.Linear(hidden, hidden),
            nn.SELU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.metres(self.mlp(self.geometry(batch)))


def resnet_trunk(name: str, pretrained: str | None, layer: str) -> tuple[nn.Module, int, int]:
    """A torchvision ResNet cut after ``layer``: (module, channels, stride).

    Weights load only from a local state-dict path; ``None`` means random initialisation.
    """
    if not hasattr(torchvision.models, name) or not name.startswith("resnet"):
        raise ValueError(
            f"unknown backbone {name!r}: use a torchvision resnet (resnet18, resnet34)"
        )
    net = getattr(torchvision.models, name)(weights=None)
    if pretrained:
        path = Path(pretrained)
        state = load_weights(path, "pretrained weights")
        missing, _ = net.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise InputError(path, f"not {name} weights: missing {missing[:3]}...")
    layers = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    if layer not in layers[4:]:
        raise ValueError(f"feature_layer must be one of {layers[4:]}, got {layer!r}")
    kept = layers[: layers.index(layer) + 1]
    trunk = nn.Sequential(*(getattr(net, n) for n in kept))
    widths = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    channels = widths[layer] * getattr(net, layer)[-1].expansion
    stride = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}[layer]
    return trunk, channels, stride


class ZhuFang(DistanceModule):
    """ResNet on the whole frame, RoIAlign on the given boxes, MLP -> distance.

    With ``box_features`` the MLP also sees DisNet's box geometry, which the RoI features
    alone (fixed-size, translation-equivariant) only carry indirectly.
    """

    inputs: ClassVar[str] = "frames"

    def __init__(
        self,
        backbone: str = "resnet34",
        pretrained: str | None = None,
        feature_layer: str = "layer4",
        roi_size: int = 7,
        hidden: int = 512,
        reduce: int = 64,
        dropout: float = 0.2,
        box_features: bool = True,
        model: str = "zhu",
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.save_hyperparameters()
        # ImageNet statistics, as torchvision backbones expect; frames arrive as uint8.
        self.register_buffer("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.trunk, channels, stride = resnet_trunk(backbone, pretrained, feature_layer)
        self.roi = RoIAlign(roi_size, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)
        extra = GEOMETRY_DIM if box_features else 0
        self.head = nn.Sequential(  # 1x1 reduction keeps the flattened RoI small
            nn.Conv2d(channels, reduce, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(reduce * roi_size * roi_size, hidden),
            nn.ReLU(),
        )
        self.regressor = nn.Sequential(
            nn.Linear(hidden + extra, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 1)
        )

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        image = batch["image"].float().div_(255).sub_(self.pixel_mean).div_(self.pixel_std)
        features = self.trunk(image)
        pooled = self.head(self.roi(features, [b.to(features.dtype) for b in batch["boxes"]]))
        if self.hparams.box_features:
            pooled = torch.cat([pooled, self.geometry(batch).to(pooled.dtype)], dim=1)
        return self.metres(self.regressor(pooled).float())


NETWORKS: dict[str, type[DistanceModule]] = {"disnet": DisNet, "zhu": ZhuFang}
REFERENCES = ("mean", "pinhole")


def network_class(model: str) -> type[DistanceModule]:
    """A built-in network by name, or the plug-in variant ``model`` names (``file.py:Class``,
    a DistanceModule that defines ``forward``)."""
    if is_variant(model):
        return load_variant("distance", "model", model)
    return NETWORKS[model]


def reads_frames(model: str) -> bool:
    """Whether the network reads whole frames (Zhu & Fang's batches), not box geometry."""
    return network_class(model).inputs == "frames"


def load_network(checkpoint: dict[str, Any], path: Path) -> DistanceModule:
    """The network of a loaded Lightning checkpoint (``path`` names it in errors)."""
    name = checkpoint.get("hyper_parameters", {}).get("model")
    if name not in NETWORKS and not is_variant(name):
        raise InputError(path, f"not a distance network checkpoint (model={name!r})")
    module = network_class(name)(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
