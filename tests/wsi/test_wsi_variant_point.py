"""The wsi track's extension point: DAS-MIL's graph layer (``gnn``) is a
workflow.wsi.mil.GraphLayer; the built-ins gat and gcn are ones wrapping torch_geometric's
convolutions unchanged, and the worked example variants/wsi/graphsage.py plugs in by its spec."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

from tests.wsi.test_wsi_models import DIM, synthetic_slide
from workflow.common.config import ConfigError, stage_settings
from workflow.common.errors import InputError
from workflow.common.variants import load_variant
from workflow.wsi.mil import GATLayer, GCNLayer, GraphLayer, gnn_class, gnn_layer
from workflow.wsi.models import build_model

ROOT = Path(__file__).resolve().parents[2]
SAGE = "variants/wsi/graphsage.py:GraphSAGE"
SMALL = {"hidden": 16, "q_dim": 8}


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    """Specs name files relative to the working directory: the repository's root."""
    monkeypatch.chdir(ROOT)


def tiny_graph(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    return torch.randn(n, DIM), torch.cat([ring, ring.flip(0)], dim=1)


def test_the_worked_example_loads_builds_and_runs():
    cls = load_variant("wsi", "gnn", SAGE)
    assert cls is gnn_class(SAGE) and issubclass(cls, GraphLayer) and cls.__name__ == "GraphSAGE"
    layer = gnn_layer(SAGE, DIM, 7, heads=3, dropout=0.2)
    assert isinstance(layer.conv, SAGEConv) and (layer.in_dim, layer.out_dim) == (DIM, 7)
    x, edges = tiny_graph()
    layer.eval()
    out = layer(x, edges)
    assert out.shape == (5, 7) and torch.isfinite(out).all()
    # a tile without neighbours keeps its own features' term (the root weight)
    alone = layer(x, edges[:, :0])
    assert alone.shape == (5, 7) and not torch.allclose(alone, out)
    assert torch.allclose(alone, layer.conv.lin_r(x) + layer.conv.lin_l.bias, atol=1e-6)


def test_dasmil_trains_with_the_worked_example():
    torch.manual_seed(0)
    graph = synthetic_slide(np.random.default_rng(0), 1, "s0")
    model = build_model({**SMALL, "model": "dasmil", "gnn": SAGE}, DIM).train()
    assert all(type(g).__name__ == "GraphSAGE" for g in [*model.scale_gnns, model.joint_gnn])
    out = model(graph)
    assert out["bag_logit"].shape == () and out["attention"].shape == out["nodes"].shape
    loss = model.loss(out, graph)["loss"]
    loss.backward()
    grad = model.scale_gnns[1].conv.lin_r.weight.grad
    assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    ("kind", "layer", "conv"),
    [
        ("gat", GATLayer, lambda: GATConv(DIM, 6, heads=3, concat=False, dropout=0.2)),
        ("gcn", GCNLayer, lambda: GCNConv(DIM, 6)),
    ],
)
def test_the_built_ins_are_graph_layers_that_wrap_the_convolutions_unchanged(kind, layer, conv):
    """Same parameters from the same seed, same outputs: the demo's numbers do not move."""
    assert gnn_class(kind) is layer and issubclass(layer, GraphLayer)
    torch.manual_seed(0)
    built = gnn_layer(kind, DIM, 6, heads=3, dropout=0.2).eval()
    torch.manual_seed(0)
    plain = conv().eval()
    assert [n.removeprefix("conv.") for n, _ in built.named_parameters()] == [
        n for n, _ in plain.named_parameters()
    ]
    pairs = zip(built.parameters(), plain.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    x, edges = tiny_graph()
    assert torch.equal(built(x, edges), plain(x, edges))
    # a checkpoint from before GraphLayer (the convolution's tensors one level up) still loads
    model = build_model({**SMALL, "model": "dasmil", "gnn": kind}, DIM)
    old = {k.replace(".conv.", "."): v for k, v in model.state_dict().items()}
    assert any(k.startswith("joint_gnn.") and ".conv." not in k for k in old)
    fresh = build_model({**SMALL, "model": "dasmil", "gnn": kind}, DIM)
    fresh.load_state_dict(copy.deepcopy(old))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_unknown_names_are_not_variants():
    with pytest.raises(ValueError, match="gat or gcn"):
        gnn_class("sage")


def plugin(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "layer.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_a_layer_without_forward_is_an_input_error_naming_its_file(tmp_path):
    path = plugin(tmp_path, """
        from workflow.wsi.mil import GraphLayer

        class NoForward(GraphLayer):
            pass
        """)  # fmt: skip
    with pytest.raises(InputError) as err:
        load_variant("wsi", "gnn", f"{path}:NoForward")
    assert err.value.path == str(path)
    assert err.value.problem == (
        "NoForward does not define forward() (required of a workflow.wsi.mil.GraphLayer)"
    )


def test_a_layer_outside_the_point_is_an_input_error_naming_its_file(tmp_path):
    path = plugin(tmp_path, """
        from torch import nn

        class Loose(nn.Module):
            def forward(self, x, edge_index):
                return x
        """)  # fmt: skip
    with pytest.raises(InputError, match="Loose is not a subclass of workflow.wsi.mil.GraphLayer"):
        gnn_class(f"{path}:Loose")


def test_the_schema_takes_the_built_ins_and_a_plugin_spec():
    for value in ("gat", "gcn", SAGE):
        assert stage_settings({"gnn": value}, "wsi_train")["gnn"] == value
    with pytest.raises(ConfigError, match="gnn"):
        stage_settings({"gnn": "sage"}, "wsi_train")
