"""The DAS-MIL presets against the reference code (mil4wsi, github.com/aimagelab/mil4wsi).

The settings are checked against a transcription of the reference's ``experiments.py`` over
``parser.py``'s defaults; the model is checked against an independent re-statement of the
reference's forward pass and loss (``models/dasmil/dasmil.py``, ``models/utils/basemodel.py``,
``models/utils/modules.py``, ``utilsmil4wsi/losses.py``) written here on the reference's data
layout (``x``, ``edge_index``, ``edge_index_2``/``_3``, ``level``, ``childof``), with our
model's weights copied in: every logit, attention and loss term must agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv

from tests.conftest import copy_repo, snakemake_in
from tests.wsi.test_wsi_models import DIM, synthetic_slide
from workflow.wsi.graph import ScaleFeatures, build_graph
from workflow.wsi.mil import ancestors
from workflow.wsi.models import build_model
from workflow.wsi.presets import PRESETS

# utilsmil4wsi/parser.py defaults, then launch_DASMIL_cam / launch_DASMIL_lung overrides
PARSER = {
    "num_layers": 1,
    "dropout": True,
    "dropout_rate": 0.2,
    "layer_name": "GAT",
    "heads": 3,
    "lamb": 1.0,
    "beta": 1.0,
    "temperature": 1.5,
    "max": True,
    "residual": False,
}
CAM = {**PARSER, "scale": "23", "c_hidden": 256, "residual": False}
LUNG = {**PARSER, "scale": "13", "c_hidden": 384, "residual": True}
# the reference's scale digits: 1 = x5, 2 = x10, 3 = x20 -> our indices into [x5, x10, x20]
SCALE_INDEX = {"1": 0, "2": -2, "3": -1}


@pytest.mark.parametrize(
    ("preset", "reference"), [("mil4wsi_camelyon16", CAM), ("mil4wsi_tcga_lung", LUNG)]
)
def test_preset_settings_are_the_reference_run(preset, reference):
    s = PRESETS[preset]
    assert s["scales"] == [SCALE_INDEX[d] for d in reference["scale"]]
    assert s["hidden"] == reference["c_hidden"] and s["residual"] == reference["residual"]
    assert s["gnn"] == reference["layer_name"].lower() and s["heads"] == reference["heads"]
    assert s["dropout"] == reference["dropout_rate"]
    # --dropout on: dropout_node's default p = 0.5 before every GNN step
    assert s["node_dropout"] == (0.5 if reference["dropout"] else 0.0)
    assert s["temperature"] == reference["temperature"]
    assert s["mse_weight"] == reference["beta"] and s["kl_weight"] == reference["lamb"]
    assert s["student_bag_weight"] == 1.0 - reference["lamb"]
    assert s["child_pool"] == ("max" if reference["max"] else "mean")
    assert s["scale_projection"] is False and s["student_nodes"] == "parents"
    assert s["predict"] == "teacher"


class ReferenceDASMIL(nn.Module):
    """mil4wsi's DASMIL, restated: one GAT layer per scale keeping the width, a joint GAT
    layer to ``hidden``, optional GLU residuals, DSMIL's MILNet per scale with the student
    on ``x[childof.unique()]``."""

    def __init__(self, c_in: int, hidden: int, residual: bool) -> None:
        super().__init__()
        self.hidden, self.residual = hidden, residual
        self.gnn1 = GATConv(c_in, c_in, heads=3, concat=False, dropout=0.2)
        self.gnn2 = GATConv(c_in, c_in, heads=3, concat=False, dropout=0.2)
        self.last = GATConv(c_in, hidden, heads=3, concat=False, dropout=0.2)
        if residual:
            self.glus = nn.ModuleList([self._glu(c_in), self._glu(c_in), self._glu(c_in)])
        self.mil2, self.mil3 = self._milnet(hidden), self._milnet(hidden)

    @staticmethod
    def _glu(d: int) -> nn.Module:
        return nn.Sequential(nn.Linear(d, d // 2), nn.ELU(), nn.Linear(d // 2, d))

    @staticmethod
    def _milnet(d: int) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "fc": nn.Linear(d, 1),
                "lin": nn.Linear(d, d),
                "q": nn.Linear(d, 128),
                "v": nn.Linear(d, d),
                "fcc": nn.Conv1d(1, 1, kernel_size=d),
            }
        )

    def _scale(self, x, edges, gnn, glu):
        out = gnn(x, edges)
        if self.residual:
            out = x + out * torch.sigmoid(glu(out))
        return out

    @staticmethod
    def _mil(m: nn.ModuleDict, feats: torch.Tensor):
        classes = m["fc"](feats)
        f = torch.relu(m["lin"](feats))
        v = m["v"](f)
        q = torch.tanh(m["q"](f))
        _, order = torch.sort(classes, 0, descending=True)
        q_max = torch.tanh(m["q"](f[order[0]]))
        a = torch.softmax(q @ q_max.t() / np.sqrt(q.shape[1]), 0)
        b = (a.t() @ v).view(1, 1, -1)
        return classes, m["fcc"](b).view(1, -1), a

    def forward(self, data: dict[str, torch.Tensor]):
        x, level, childof = data["x"], data["level"], data["childof"]
        lo, hi = (
            (level == level.min()).nonzero().view(-1),
            (level == level.max()).nonzero().view(-1),
        )
        glus = list(self.glus) if self.residual else [None] * 3
        f_lo = self._scale(x[lo], data["edge_index_2"], self.gnn1, glus[0])
        f_hi = self._scale(x[hi], data["edge_index_3"], self.gnn2, glus[1])
        feats = torch.cat([f_lo, f_hi])[torch.cat([lo, hi]).sort()[1]]
        feats = self._scale(feats, data["edge_index"], self.last, glus[2])
        parents = childof[hi]
        return {
            "lower": self._mil(self.mil2, feats[parents.unique()]),
            "higher": self._mil(self.mil3, feats[hi]),
            "childof": parents,
        }

    @staticmethod
    def loss(out, y: torch.Tensor, tau: float = 1.5) -> dict[str, torch.Tensor]:
        bce = nn.BCEWithLogitsLoss()
        (c1, b1, _), (c2, b2, _) = out["higher"], out["lower"]
        label = y.float().view(1, -1)
        higher = bce(b1, label) + bce(c1.max(0)[0].view(1, -1), label)
        lower = 0.0 * bce(b2, label) + bce(c2.max(0)[0].view(1, -1), label)
        cluster = torch.unique(out["childof"], return_inverse=True)[1]
        target = torch.full((int(cluster.max()) + 1,), -torch.inf).scatter_reduce(
            0, cluster, c1.view(-1).detach(), "amax"
        )
        mse = F.mse_loss(c2.view(-1), target)
        s, t = torch.sigmoid(b2 / tau), torch.sigmoid(b1 / tau).detach()
        ys = (torch.cat([s, 1 - s], 1) + 1e-7) / (1 + 1e-8)
        yt = (torch.cat([t, 1 - t], 1) + 1e-7) / (1 + 1e-8)
        kl = F.kl_div(ys.log(), yt, reduction="batchmean")
        return {"total": higher + lower + mse + kl, "mse": mse, "kl": kl}


def reference_layout(graph, student: int, teacher: int) -> dict[str, torch.Tensor]:
    """The two scales of one of our graphs as the reference's files hold them: the two
    levels' nodes in order, per-level spatial edges, ``childof`` to the student-scale
    ancestor, the joint adjacency with the parent-child links."""
    keep = ((graph.level == student) | (graph.level == teacher)).nonzero().view(-1)
    local = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    local[keep] = torch.arange(keep.numel())
    level = graph.level[keep]
    parent = ancestors(graph, keep, student)
    childof = torch.where((level == teacher) & (parent >= 0), local[parent.clamp(min=0)], -1)
    e = graph.edge_spatial
    both = (local[e[0]] >= 0) & (local[e[1]] >= 0)
    spatial = local[e[:, both]]
    kids = (childof >= 0).nonzero().view(-1)
    cross = torch.stack([kids, childof[kids]])
    per_level = []
    for lv in (student, teacher):
        nodes = (level == lv).nonzero().view(-1)
        pos = torch.full((keep.numel(),), -1, dtype=torch.long)
        pos[nodes] = torch.arange(nodes.numel())
        inside = (pos[spatial[0]] >= 0) & (pos[spatial[1]] >= 0)
        per_level.append(pos[spatial[:, inside]])
    return {
        "x": graph.x[keep],
        "level": level,
        "childof": childof,
        "edge_index": torch.cat([spatial, cross, cross.flip(0)], 1),
        "edge_index_2": per_level[0],
        "edge_index_3": per_level[1],
    }


def copy_weights(ours, ref: ReferenceDASMIL) -> None:
    with torch.no_grad():
        for mine, theirs in (
            (ours.scale_gnns[0].conv, ref.gnn1),
            (ours.scale_gnns[1].conv, ref.gnn2),
            (ours.joint_gnn.conv, ref.last),
        ):
            theirs.load_state_dict(mine.state_dict())
        for head, m in ((ours.student, ref.mil2), (ours.teacher, ref.mil3)):
            m["fc"].load_state_dict(head.instance.state_dict())
            m["lin"].load_state_dict(head.lin[0].state_dict())
            m["q"].load_state_dict(head.q[0].state_dict())
            m["v"].load_state_dict(head.v[1].state_dict())
            m["fcc"].weight.copy_(head.bag.weight.view(1, 1, -1))
            m["fcc"].bias.copy_(head.bag.bias)
        if ref.residual:
            glus = [*ours.scale_glus, ours.joint_glu]
            for mine, theirs in zip(glus, ref.glus, strict=True):
                theirs.load_state_dict(mine.mlp.state_dict())


def sparse_slide(rng: np.random.Generator, label: int):
    """x5 / x10 / x20 tiles where whole x10 and x5 subtrees have no x20 tile (a tissue edge),
    so the student's 'parents' and 'all' differ at either student scale."""
    coarse = np.array([(x, y) for x in range(4) for y in range(2)])
    cells, parents = [coarse], [np.full(len(coarse), -1)]
    for step in range(2):
        above = cells[-1]
        kids = np.array(
            [(2 * x + dx, 2 * y + dy) for x, y in above for dx in (0, 1) for dy in (0, 1)]
        )
        parent = np.repeat(np.arange(len(above)), 4)
        keep = rng.random(len(kids)) < 0.8
        if step == 1:  # the x20 tiles of the left half only
            keep &= kids[:, 0] < 8
        keep[0] = True
        cells.append(kids[keep])
        parents.append(parent[keep])
    scales = [
        ScaleFeatures(
            rng.normal(size=(len(c), DIM)).astype(np.float32),
            c * int(256 * 2.0 ** (3 - i)),
            p,
            2.0 ** (3 - i),
            256,
            f"x{5 * 2**i}",
        )
        for i, (c, p) in enumerate(zip(cells, parents, strict=True))
    ]
    return build_graph(scales, label, "sparse")


@pytest.mark.parametrize("preset", ["mil4wsi_camelyon16", "mil4wsi_tcga_lung"])
def test_preset_model_computes_what_the_reference_computes(preset):
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    ours = build_model({"model": "dasmil", "preset": preset, "hidden": DIM}, DIM).eval()
    ref = ReferenceDASMIL(DIM, DIM, residual=PRESETS[preset]["residual"]).eval()
    copy_weights(ours, ref)
    student, teacher = (s % 3 for s in PRESETS[preset]["scales"])
    for graph in (synthetic_slide(rng, 1, "s"), sparse_slide(rng, 0), sparse_slide(rng, 1)):
        with torch.no_grad():
            out = ours(graph)
            terms = ours.loss(out, graph)
            theirs = ref(reference_layout(graph, student, teacher))
            expected = ref.loss(theirs, graph.y)
        c1, b1, a1 = theirs["higher"]
        c2, b2, a2 = theirs["lower"]
        assert torch.allclose(out["teacher"]["instance_logits"], c1.view(-1), atol=1e-5)
        assert torch.allclose(out["teacher"]["bag_logit"], b1.view(()), atol=1e-5)
        assert torch.allclose(out["teacher"]["attention"], a1.view(-1), atol=1e-6)
        # the student reads only the ancestors of teacher nodes, as feats[childof.unique()]
        assert out["student"]["instance_logits"].numel() == c2.numel()
        assert torch.allclose(out["student"]["instance_logits"], c2.view(-1), atol=1e-5)
        assert torch.allclose(out["student"]["bag_logit"], b2.view(()), atol=1e-5)
        assert torch.allclose(out["bag_logit"], b1.view(()), atol=1e-5)
        assert torch.allclose(terms["mse"], expected["mse"], atol=1e-5)
        assert torch.allclose(terms["kl"], expected["kl"], atol=1e-5)
        assert torch.allclose(terms["loss"], expected["total"], atol=1e-5)


def test_preset_drops_half_the_nodes_in_training():
    """mil4wsi's dropout_node (p = 0.5) before every GNN step: in training the spatial edges
    a layer sees shrink to about a quarter (both ends must survive); in eval none are lost."""
    torch.manual_seed(0)
    model = build_model({"model": "dasmil", "preset": "mil4wsi_camelyon16", "hidden": DIM}, DIM)
    seen: list[int] = []
    model.joint_gnn.register_forward_pre_hook(lambda m, args: seen.append(args[1].shape[1]))
    graph = synthetic_slide(np.random.default_rng(1), 1, "s")
    model.train()
    for _ in range(200):
        model(graph)
    model.eval()
    model(graph)
    full = seen.pop()
    assert 0.15 < np.mean(seen) / full < 0.35


def test_residual_needs_matching_widths():
    with pytest.raises(ValueError, match="hidden equal to the feature width 32"):
        build_model({"model": "dasmil", "preset": "mil4wsi_tcga_lung"}, DIM)
    with pytest.raises(ValueError, match="unknown wsi preset 'camelyon'"):
        build_model({"model": "dasmil", "preset": "camelyon"}, DIM)
    # the baselines read no preset key: ABMIL keeps its own width
    abmil = build_model({"model": "abmil", "preset": "mil4wsi_tcga_lung"}, DIM)
    assert abmil.settings["hidden"] != PRESETS["mil4wsi_tcga_lung"]["hidden"]


def test_each_real_dataset_trains_its_own_preset_and_reproduces_its_paper(tmp_path):
    """config/leonardo.yaml: Camelyon16 and TCGA lung run DAS-MIL as the reference does on
    each (a dataset's `train`), with no demo-only setting leaking in; `wsi_reproduction`
    compares every seed of `dasmil` with the published numbers."""
    workdir = copy_repo(tmp_path)
    targets = [
        "results/wsi/camelyon16/dasmil/seed0/final.ckpt",
        "results/wsi/tcga_nsclc/dasmil/seed0/final.ckpt",
        "wsi_reproduction",
    ]
    out = snakemake_in(workdir, "config/leonardo.yaml", "-n", "-p", *targets).stdout
    settings = {}
    for line in out.splitlines():
        if "scripts/wsi.py train --settings" in line:
            text = line.split("--settings ", 1)[1].split("'")[1]
            dataset = line.split("--graphs ")[1].split("/")[2]
            settings[dataset] = json.loads(text)
    assert settings["camelyon16"]["preset"] == "mil4wsi_camelyon16"
    assert settings["tcga_nsclc"]["preset"] == "mil4wsi_tcga_lung"
    assert all("hidden" not in s for s in settings.values())  # the preset's width holds
    reproduce = [line for line in out.splitlines() if "scripts/wsi.py reproduce" in line]
    assert len(reproduce) == 2
    for line in reproduce:
        assert line.count("/dasmil/seed") == 3  # the three seeds of config/leonardo.yaml
