"""DAS-MIL (Bontempo et al., 2023): a GNN per scale over the slide's multi-scale tile graph,
DS-MIL heads on each scale and on their concatenation, and knowledge distillation from the
coarse-to-fine teacher to each scale."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.utils import dropout_node, subgraph

from workflow.wsi.mil import (
    DSMILHead,
    Output,
    ancestors,
    distillation_terms,
    gnn_layer,
    mil_loss,
    resolve_scale,
)


class GatedResidual(nn.Module):
    """mil4wsi's gated linear unit ``x * sigmoid(MLP(x))`` (MLP: width -> width/2, ELU ->
    width), the residual branch its lung setup adds after every GNN step."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim // 2), nn.ELU(), nn.Linear(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(x))


class DASMIL(nn.Module):
    """DAS-MIL (Bontempo et al., MICCAI 2023) on two scales ``scales`` = (student, teacher),
    by default the two finest (x10, x20).

    Per-scale GNN (GAT, 3 heads, averaged; or GCN; or a plug-in ``gnn``, a
    :class:`~workflow.wsi.mil.GraphLayer`) over each scale's spatial edges -> one joint GNN
    layer over both scales' spatial + parent-child edges -> a DSMIL head per scale.
    Loss: bag + max-instance BCE per head (``student_bag_weight`` scales the student's bag
    term; the released code sets it to 1 - lambda = 0, the track spec to 1) + distillation
    (``mse_weight`` x instance MSE + ``kl_weight`` x bag KL at ``temperature``) from the
    detached teacher into the student; ``distill: false`` drops it.

    The defaults differ from the reference code in four places, each a setting (the presets
    of :mod:`workflow.wsi.presets` set them as mil4wsi does): ``scale_projection`` (ours: the
    per-scale GNN maps to ``hidden`` and a ReLU follows; mil4wsi keeps the input width, no
    activation), ``node_dropout`` (ours 0; mil4wsi 0.5 before every GNN step), ``child_pool``
    (ours mean; mil4wsi max), ``student_nodes`` (ours every student-scale node; mil4wsi only
    those with a child at the teacher's scale) and ``student_bag_weight`` (1 vs 0).
    ``residual`` adds mil4wsi's gated residual (:class:`GatedResidual`) after every GNN step.

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
        "scale_projection": True,
        "residual": False,
        "student_nodes": "all",
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
        if s["student_nodes"] not in ("all", "parents"):
            raise ValueError(f"student_nodes must be all or parents, got {s['student_nodes']!r}")
        self.settings = s
        hidden, heads, dropout = int(s["hidden"]), int(s["heads"]), float(s["dropout"])
        self.scale_dim = hidden if s["scale_projection"] else int(in_dim)
        if s["residual"] and (s["scale_projection"] or hidden != in_dim):
            raise ValueError(
                "residual adds each GNN step's input to its output: it needs "
                f"scale_projection: false and hidden equal to the feature width {in_dim} "
                f"(got scale_projection: {s['scale_projection']}, hidden: {hidden})"
            )
        self.scale_gnns = nn.ModuleList(
            [gnn_layer(s["gnn"], in_dim, self.scale_dim, heads, dropout) for _ in range(2)]
        )
        self.joint_gnn = gnn_layer(s["gnn"], self.scale_dim, hidden, heads, dropout)
        self.student = DSMILHead(hidden, int(s["q_dim"]))
        self.teacher = DSMILHead(hidden, int(s["q_dim"]))
        if s["residual"]:
            self.scale_glus = nn.ModuleList([GatedResidual(in_dim) for _ in range(2)])
            self.joint_glu = GatedResidual(hidden)

    def _edges(self, edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
        p = float(self.settings["node_dropout"])
        if self.training and p > 0 and edges.numel():
            edges, _, _ = dropout_node(edges, p=p, num_nodes=num_nodes, training=True)
        return edges

    def _step(
        self, gnn: nn.Module, glu: nn.Module | None, x: torch.Tensor, edges: torch.Tensor
    ) -> torch.Tensor:
        """One GNN step on (node dropout of) ``edges``, with the gated residual if any."""
        out = gnn(x, self._edges(edges, x.shape[0]))
        return x + glu(out) if glu is not None else out

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
        h = x.new_zeros(nodes.numel(), self.scale_dim)
        glus = getattr(self, "scale_glus", (None, None))
        members = []
        for gnn, glu, lv in zip(self.scale_gnns, glus, (student_level, teacher_level), strict=True):
            mask = level == lv
            if not mask.any():
                raise ValueError(f"slide {getattr(graph, 'slide_id', '?')} has no node at {lv}")
            edges, _ = subgraph(mask, spatial, relabel_nodes=True, num_nodes=nodes.numel())
            idx = mask.nonzero().view(-1)
            out = self._step(gnn, glu, x[idx], edges)
            if self.settings["scale_projection"]:
                out = F.relu(out)
            h = h.index_copy(0, idx, out.to(h.dtype))
            members.append(idx)
        joint = torch.cat([spatial, cross], dim=1)
        h = self._step(self.joint_gnn, getattr(self, "joint_glu", None), h, joint)
        if self.settings["student_nodes"] == "parents" and linked.any():
            # mil4wsi's student reads feats[childof.unique()]: the ancestors of teacher nodes
            # (a slide without any link keeps them all, where mil4wsi skips the slide)
            members[0] = local[parent_global[linked]].unique()
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
