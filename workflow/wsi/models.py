"""DAS-MIL and the MIL baselines, as plain ``nn.Module``s over one slide graph.

Every model takes one slide (a graph from :mod:`workflow.wsi.graph`, one slide per batch as in
the reference) and returns a dict with at least ``bag_logit`` (scalar logit of the positive
class), ``instance_logits`` and ``attention`` for the nodes listed in ``nodes`` (global node
indices of the scale the heatmap shows, so ``graph.coords[nodes]`` places them), and has
``loss(output, graph) -> {"loss": total, <term>: value}``. Scales are chosen by index into the
graph's scales (0 = coarsest, -1 = finest), so one config works for any number of scales.

Only torch and torch_geometric's pure-PyTorch paths are used (``GATConv``, ``GCNConv``,
``utils.scatter``): the compiled extensions (torch_scatter, pyg-lib) are not needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, GCNConv
from torch_geometric.utils import dropout_node, scatter, subgraph

log = logging.getLogger("lsai.wsi.models")

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


def gnn_layer(kind: str, in_dim: int, out_dim: int, heads: int, dropout: float) -> nn.Module:
    if kind == "gat":
        return GATConv(in_dim, out_dim, heads=heads, concat=False, dropout=dropout)
    if kind == "gcn":
        return GCNConv(in_dim, out_dim)
    raise ValueError(f"gnn must be gat or gcn, got {kind!r}")


class DASMIL(nn.Module):
    """DAS-MIL (Bontempo et al., MICCAI 2023) on two scales ``scales`` = (student, teacher),
    by default the two finest (x10, x20).

    Per-scale GNN (GAT, 3 heads, averaged; or GCN) over each scale's spatial edges -> one
    joint GNN layer over both scales' spatial + parent-child edges -> a DSMIL head per scale.
    Loss: bag + max-instance BCE per head (``student_bag_weight`` scales the student's bag
    term; the released code sets it to 1 - lambda = 0, the track spec to 1) + distillation
    (``mse_weight`` x instance MSE + ``kl_weight`` x bag KL at ``temperature``) from the
    detached teacher into the student; ``distill: false`` drops it.

    Prediction (``predict``): ``teacher`` (default: the x20 head, which the released code
    reports and selects checkpoints on as ``auc_higher``), ``student`` (x10 head) or ``mean``
    (average of the two heads' probabilities). Scales coarser than the student's are not used;
    with non-adjacent scales the cross edges link each teacher node to its ancestor.
    """

    SETTINGS: ClassVar[dict[str, Any]] = {
        "scales": [-2, -1],
        "hidden": 256,
        "heads": 3,
        "gnn": "gat",
        "dropout": 0.2,
        "node_dropout": 0.0,
        "q_dim": 128,
        "distill": True,
        "temperature": 1.5,
        "mse_weight": 1.0,
        "kl_weight": 1.0,
        "bag_weight": 1.0,
        "max_weight": 1.0,
        "student_bag_weight": 1.0,
        "child_pool": "mean",
        "predict": "teacher",
    }

    def __init__(self, in_dim: int, **settings: Any) -> None:
        super().__init__()
        s = {**self.SETTINGS, **settings}
        if len(s["scales"]) != 2:
            raise ValueError(f"dasmil needs two scales (student, teacher), got {s['scales']}")
        if s["predict"] not in ("teacher", "student", "mean"):
            raise ValueError(f"predict must be teacher, student or mean, got {s['predict']!r}")
        if s["child_pool"] not in ("mean", "max"):
            raise ValueError(f"child_pool must be mean or max, got {s['child_pool']!r}")
        self.settings = s
        hidden, heads, dropout = int(s["hidden"]), int(s["heads"]), float(s["dropout"])
        self.scale_gnns = nn.ModuleList(
            [gnn_layer(s["gnn"], in_dim, hidden, heads, dropout) for _ in range(2)]
        )
        self.joint_gnn = gnn_layer(s["gnn"], hidden, hidden, heads, dropout)
        self.student = DSMILHead(hidden, int(s["q_dim"]))
        self.teacher = DSMILHead(hidden, int(s["q_dim"]))

    def _edges(self, edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
        p = float(self.settings["node_dropout"])
        if self.training and p > 0 and edges.numel():
            edges, _, _ = dropout_node(edges, p=p, num_nodes=num_nodes, training=True)
        return edges

    def forward(self, graph: Data) -> Output:
        student_level, teacher_level = (resolve_scale(graph, s) for s in self.settings["scales"])
        if student_level >= teacher_level:
            raise ValueError("dasmil scales must be (coarser student, finer teacher)")
        n = graph.num_nodes
        keep = (graph.level == student_level) | (graph.level == teacher_level)
        nodes = keep.nonzero().view(-1)
        x, level = graph.x[nodes], graph.level[nodes]
        spatial, _ = subgraph(keep, graph.edge_spatial, relabel_nodes=True, num_nodes=n)
        local = torch.full((n,), -1, dtype=torch.long, device=x.device)
        local[nodes] = torch.arange(nodes.numel(), device=x.device)
        # cross edges from each teacher node to its ancestor at the student's scale: the
        # graph's parent-child edges when the two scales are adjacent (the default)
        teacher_nodes = (graph.level == teacher_level).nonzero().view(-1)
        parent_global = ancestors(graph, teacher_nodes, student_level)
        linked = parent_global >= 0
        up = torch.stack([local[teacher_nodes[linked]], local[parent_global[linked]]])
        cross = torch.cat([up, up.flip(0)], dim=1)
        h = x.new_zeros(nodes.numel(), int(self.settings["hidden"]))
        members = []
        for gnn, lv in zip(self.scale_gnns, (student_level, teacher_level), strict=True):
            mask = level == lv
            if not mask.any():
                raise ValueError(f"slide {getattr(graph, 'slide_id', '?')} has no node at {lv}")
            edges, _ = subgraph(mask, spatial, relabel_nodes=True, num_nodes=nodes.numel())
            idx = mask.nonzero().view(-1)
            out = F.relu(gnn(x[idx], self._edges(edges, idx.numel())))
            h = h.index_copy(0, idx, out.to(h.dtype))
            members.append(idx)
        joint = torch.cat([spatial, cross], dim=1)
        h = self.joint_gnn(h, self._edges(joint, nodes.numel()))
        student = self.student(h[members[0]])
        teacher = self.teacher(h[members[1]])
        student_nodes = nodes[members[0]]
        # the student-list position of each teacher node's ancestor
        position = torch.full((n,), -1, dtype=torch.long, device=h.device)
        position[student_nodes] = torch.arange(student_nodes.numel(), device=h.device)
        parent = torch.where(linked, position[parent_global.clamp(min=0)], -1)
        predict = self.settings["predict"]
        if predict == "teacher":
            bag = teacher["bag_logit"]
        elif predict == "student":
            bag = student["bag_logit"]
        else:
            prob = 0.5 * (torch.sigmoid(teacher["bag_logit"]) + torch.sigmoid(student["bag_logit"]))
            bag = torch.logit(prob.clamp(1e-6, 1 - 1e-6))
        return {
            "bag_logit": bag,
            "instance_logits": teacher["instance_logits"],
            "attention": teacher["attention"],
            "nodes": teacher_nodes,
            "student": student,
            "teacher": teacher,
            "student_nodes": student_nodes,
            "parent": parent,
        }

    def loss(self, output: Output, graph: Data) -> dict[str, torch.Tensor]:
        s, y = self.settings, graph.y
        teacher_mil = mil_loss(output["teacher"], y, s["bag_weight"], s["max_weight"])
        student_mil = mil_loss(output["student"], y, s["student_bag_weight"], s["max_weight"])
        terms = {"teacher_mil": teacher_mil, "student_mil": student_mil}
        total = teacher_mil + student_mil
        if s["distill"]:
            mse, kl = distillation_terms(
                output["student"]["instance_logits"],
                output["teacher"]["instance_logits"],
                output["parent"],
                output["student"]["bag_logit"],
                output["teacher"]["bag_logit"],
                float(s["temperature"]),
                s["child_pool"],
            )
            terms |= {"mse": mse, "kl": kl}
            total = total + s["mse_weight"] * mse + s["kl_weight"] * kl
        return {"loss": total, **terms}


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


MODELS: dict[str, type[nn.Module]] = {
    "dasmil": DASMIL,
    "abmil": ABMIL,
    "dsmil": DSMILSingle,
    "meanpool": MeanPool,
    "maxpool": MaxPool,
}


def model_defaults(name: str) -> dict[str, Any]:
    """The settings a model reads, with their defaults (for the config schema)."""
    if name not in MODELS:
        raise ValueError(f"unknown wsi model {name!r}; choose from {sorted(MODELS)}")
    return dict(MODELS[name].SETTINGS)


def build_model(settings: Mapping[str, Any], in_dim: int) -> nn.Module:
    """The model named by ``settings['model']``; keys it does not read are ignored."""
    name = settings["model"]
    defaults = model_defaults(name)
    chosen = {k: settings[k] for k in defaults if k in settings}
    if "scales" in chosen:
        chosen["scales"] = list(chosen["scales"])
    return MODELS[name](in_dim, **chosen)


def probability(output: Output) -> torch.Tensor:
    return torch.sigmoid(output["bag_logit"].float())


__all__: Sequence[str] = [
    "ABMIL",
    "DASMIL",
    "DSMILHead",
    "DSMILSingle",
    "MODELS",
    "MaxPool",
    "MeanPool",
    "build_model",
    "distillation_terms",
    "model_defaults",
    "probability",
]
