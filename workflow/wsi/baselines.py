"""The single-scale MIL baselines of the DAS-MIL ablation: ABMIL (gated attention), DS-MIL
on one scale, mean and max pooling. They see one scale's node features only, no edges."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data

from workflow.wsi.mil import (
    DSMILHead,
    Output,
    bce,
    mil_loss,
    nodes_at,
    resolve_scale,
)


class SingleScale(nn.Module):
    """A baseline that sees one scale's node features only (no graph edges)."""

    SETTINGS: ClassVar[dict[str, Any]] = {"scale": -1}

    def __init__(self, in_dim: int, **settings: Any) -> None:
        super().__init__()
        self.settings = {**self.SETTINGS, **settings}

    def instances(self, graph: Data) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = nodes_at(graph, resolve_scale(graph, int(self.settings["scale"])))
        return graph.x[nodes], nodes

    def loss(self, output: Output, graph: Data) -> dict[str, torch.Tensor]:
        loss = bce(output["bag_logit"], graph.y)
        return {"loss": loss, "bag": loss}


class ABMIL(SingleScale):
    """Gated attention MIL (Ilse et al., ICML 2018): embedding -> gated attention pooling ->
    linear bag classifier; ``instance_logits`` are the classifier applied per instance."""

    SETTINGS: ClassVar[dict[str, Any]] = {
        "scale": -1,
        "hidden": 256,
        "attention_dim": 128,
        "dropout": 0.25,
    }

    def __init__(self, in_dim: int, **settings: Any) -> None:
        super().__init__(in_dim, **settings)
        s = self.settings
        hidden, attn = int(s["hidden"]), int(s["attention_dim"])
        self.embed = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(float(s["dropout"]))
        )
        self.attention_v = nn.Sequential(nn.Linear(hidden, attn), nn.Tanh())
        self.attention_u = nn.Sequential(nn.Linear(hidden, attn), nn.Sigmoid())
        self.attention_w = nn.Linear(attn, 1)
        self.classifier = nn.Linear(hidden, 1)

    def forward(self, graph: Data) -> Output:
        x, nodes = self.instances(graph)
        h = self.embed(x)
        scores = self.attention_w(self.attention_v(h) * self.attention_u(h)).view(-1)
        attention = torch.softmax(scores, dim=0)
        return {
            "bag_logit": self.classifier(attention @ h).view(()),
            "instance_logits": self.classifier(h).view(-1),
            "attention": attention,
            "nodes": nodes,
        }


class DSMILSingle(SingleScale):
    """DSMIL on one scale's raw features: the single-scale ablation of DAS-MIL's heads."""

    SETTINGS: ClassVar[dict[str, Any]] = {
        "scale": -1,
        "q_dim": 128,
        "dropout": 0.0,
        "bag_weight": 1.0,
        "max_weight": 1.0,
    }

    def __init__(self, in_dim: int, **settings: Any) -> None:
        super().__init__(in_dim, **settings)
        self.head = DSMILHead(in_dim, int(self.settings["q_dim"]), float(self.settings["dropout"]))

    def forward(self, graph: Data) -> Output:
        x, nodes = self.instances(graph)
        return {**self.head(x), "nodes": nodes}

    def loss(self, output: Output, graph: Data) -> dict[str, torch.Tensor]:
        s = self.settings
        loss = mil_loss(output, graph.y, s["bag_weight"], s["max_weight"])
        return {"loss": loss}


class MeanPool(SingleScale):
    """Linear instance classifier, bag logit = mean of the instance logits."""

    def __init__(self, in_dim: int, **settings: Any) -> None:
        super().__init__(in_dim, **settings)
        self.instance = nn.Linear(in_dim, 1)

    def forward(self, graph: Data) -> Output:
        x, nodes = self.instances(graph)
        logits = self.instance(x).view(-1)
        return {
            "bag_logit": logits.mean(),
            "instance_logits": logits,
            "attention": torch.full_like(logits, 1.0 / logits.numel()).detach(),
            "nodes": nodes,
        }


class MaxPool(MeanPool):
    """Linear instance classifier, bag logit = the highest instance logit."""

    def forward(self, graph: Data) -> Output:
        out = super().forward(graph)
        logits = out["instance_logits"]
        out["bag_logit"] = logits.max()
        out["attention"] = F.one_hot(logits.argmax(), logits.numel()).to(logits.dtype)
        return out
