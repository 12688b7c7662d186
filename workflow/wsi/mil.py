"""What DAS-MIL and the single-scale baselines share: the graph's scales and nodes, the MIL
losses, DS-MIL's critical-instance head and DAS-MIL's distillation terms."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, GCNConv
from torch_geometric.utils import scatter

from workflow.common.variants import is_variant, load_variant

Output = dict[str, Any]


def num_scales(graph: Data) -> int:
    names = getattr(graph, "magnifications", None)
    return len(names) if names else int(graph.level.max()) + 1


def resolve_scale(graph: Data, scale: int) -> int:
    """A scale index (negative counts from the finest) as a ``level`` value of this graph."""
    count = num_scales(graph)
    level = scale + count if scale < 0 else scale
    if not 0 <= level < count:
        raise ValueError(f"scale {scale} does not exist in a graph with {count} scales")
    return level


def nodes_at(graph: Data, level: int) -> torch.Tensor:
    """Global indices of the nodes of one scale; a slide without any is unusable."""
    nodes = (graph.level == level).nonzero().view(-1)
    if nodes.numel() == 0:
        raise ValueError(f"slide {getattr(graph, 'slide_id', '?')} has no node at scale {level}")
    return nodes


def ancestors(graph: Data, nodes: torch.Tensor, level: int) -> torch.Tensor:
    """The ancestor at scale ``level`` of each node (global index), -1 where the chain breaks."""
    current = nodes.clone()
    steps = int(graph.level[nodes].max()) - level if nodes.numel() else 0
    for _ in range(max(steps, 0)):
        alive = current >= 0
        above = graph.level[current.clamp(min=0)] > level
        move = alive & above
        current = torch.where(move, graph.child_of[current.clamp(min=0)], current)
    ok = current >= 0
    ok &= graph.level[current.clamp(min=0)] == level
    return torch.where(ok, current, torch.full_like(current, -1))


def bce(logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit.float().view(()), label.float().view(()))


def bernoulli_kl(teacher_logit: torch.Tensor, student_logit: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between two Bernoulli distributions given as logits; exactly
    zero when the logits are equal (log-sigmoid form, no epsilon needed)."""
    p = torch.sigmoid(teacher_logit)
    return p * (F.logsigmoid(teacher_logit) - F.logsigmoid(student_logit)) + (1 - p) * (
        F.logsigmoid(-teacher_logit) - F.logsigmoid(-student_logit)
    )


def distillation_terms(
    student_instances: torch.Tensor,
    teacher_instances: torch.Tensor,
    parent: torch.Tensor,
    student_bag: torch.Tensor,
    teacher_bag: torch.Tensor,
    temperature: float = 1.5,
    pool: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """DAS-MIL's distillation from the fine (teacher) head to the coarse (student) head.

    ``parent[j]`` is the student-instance index of teacher instance ``j`` (-1: none). MSE
    between each student instance logit and the ``pool`` (mean; the released code's default
    is max) of its children's teacher logits, over students that have children; KL between
    the bag probabilities at ``temperature``. The teacher side is detached: distillation never
    moves the teacher.
    """
    teacher_instances = teacher_instances.detach().float().view(-1)
    teacher_bag = teacher_bag.detach().float().view(())
    student_instances = student_instances.float().view(-1)
    valid = parent >= 0
    if valid.any():
        n = student_instances.numel()
        target = scatter(teacher_instances[valid], parent[valid], dim=0, dim_size=n, reduce=pool)
        has_child = torch.bincount(parent[valid], minlength=n) > 0
        mse = F.mse_loss(student_instances[has_child], target[has_child])
    else:
        mse = student_instances.sum() * 0.0
    kl = bernoulli_kl(teacher_bag / temperature, student_bag.float().view(()) / temperature)
    return mse, kl


class DSMILHead(nn.Module):
    """DSMIL's two streams (Li et al., CVPR 2021) as in mil4wsi: a linear instance
    classifier, and a bag classifier whose attention is each instance's query similarity to
    the critical (max-scoring) instance."""

    def __init__(self, dim: int, q_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.instance = nn.Linear(dim, 1)
        self.lin = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.q = nn.Sequential(nn.Linear(dim, q_dim), nn.Tanh())
        self.v = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim))
        self.bag = nn.Linear(dim, 1)  # = DSMIL's Conv1d over the bag embedding
        self.scale = 1.0 / math.sqrt(q_dim)

    def forward(self, feats: torch.Tensor) -> Output:
        instance_logits = self.instance(feats).view(-1)
        h = self.lin(feats)
        queries = self.q(h)
        critical = h[instance_logits.argmax()].unsqueeze(0)
        attention = torch.softmax(queries @ self.q(critical).t() * self.scale, dim=0).view(-1)
        bag = attention @ self.v(h)
        return {
            "instance_logits": instance_logits,
            "attention": attention,
            "bag_logit": self.bag(bag).view(()),
        }


def mil_loss(head: Output, label: torch.Tensor, bag_weight: float, max_weight: float):
    """DSMIL's loss: BCE of the bag logit and of the highest instance logit."""
    return bag_weight * bce(head["bag_logit"], label) + max_weight * bce(
        head["instance_logits"].max(), label
    )


class GraphLayer(nn.Module):
    """DAS-MIL's graph layer, the track's plug-in extension point (``gnn``; see
    workflow/common/variants.py): the per-scale layers and the joint layer are each one.

    A variant subclasses it and defines ``forward``; the built-ins are ``gat`` and ``gcn``
    (:data:`GNN_LAYERS`). DAS-MIL builds each layer as ``cls(in_dim, out_dim, heads=heads,
    dropout=dropout)`` (``heads`` and ``dropout`` are the experiment's settings; a layer may
    ignore them, as GCN does) and calls ``layer(x, edge_index)``: ``x`` the (N, in_dim) node
    features of one slide, ``edge_index`` a (2, E) long tensor of directed edges in both
    directions (it may be empty: a scale without spatial neighbours), and it returns the
    (N, out_dim) node features. It makes its parameters in ``__init__`` from torch's RNG (the
    run's seed) and keeps them as submodules or parameters, so checkpoints hold them.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.heads, self.dropout = int(heads), float(dropout)


class _ConvLayer(GraphLayer):
    """A built-in: one torch_geometric convolution, ``self.conv``."""

    conv: nn.Module

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.conv(x, edge_index)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before GraphLayer held the convolution's tensors one level up
        inner = prefix + "conv."
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
            state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GATLayer(_ConvLayer):
    """GAT (Velickovic et al., 2018): ``heads`` attention heads, averaged (DAS-MIL's)."""

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__(in_dim, out_dim, heads, dropout)
        self.conv = GATConv(in_dim, out_dim, heads=heads, concat=False, dropout=dropout)


class GCNLayer(_ConvLayer):
    """GCN (Kipf & Welling, 2017); ``heads`` and ``dropout`` are not used."""

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__(in_dim, out_dim, heads, dropout)
        self.conv = GCNConv(in_dim, out_dim)


#: The built-in graph layers by their ``gnn`` name.
GNN_LAYERS: dict[str, type[GraphLayer]] = {"gat": GATLayer, "gcn": GCNLayer}


def gnn_class(kind: str) -> type[GraphLayer]:
    """A built-in graph layer by name, or the plug-in variant ``kind`` names
    (``<file>.py:<Class>``, a :class:`GraphLayer` that defines ``forward``)."""
    if is_variant(kind):
        return load_variant("wsi", "gnn", kind)
    if kind not in GNN_LAYERS:
        raise ValueError(f"gnn must be gat or gcn (or a plug-in <file>.py:<Class>), got {kind!r}")
    return GNN_LAYERS[kind]


def gnn_layer(kind: str, in_dim: int, out_dim: int, heads: int, dropout: float) -> GraphLayer:
    return gnn_class(kind)(in_dim, out_dim, heads=heads, dropout=dropout)
