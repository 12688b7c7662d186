"""DAS-MIL with GraphSAGE layers: a worked plug-in variant of the wsi track.

DAS-MIL's graph layers (one per scale, one joint over both scales) are GAT by default, or GCN.
This variant swaps in GraphSAGE (Hamilton, Ying & Leskovec, "Inductive Representation
Learning on Large Graphs", NeurIPS 2017) through torch_geometric's ``SAGEConv``: each tile is
``W_self x_i + W_neigh mean_j x_j`` over its neighbours. Unlike GCN, whose one weight sees a
tile mixed into its normalised neighbourhood sum, the tile's own features keep their own weight,
so a small lesion is not averaged away by the tissue around it; unlike GAT there is no
attention, so it is cheaper. ``heads`` is not used; ``dropout`` drops input features while
training. Everything else (heads, distillation, scales) is DAS-MIL's.

Use it from the config, with nothing else changed:

    wsi:
      experiments:
        dasmil_sage: {model: dasmil, gnn: variants/wsi/graphsage.py:GraphSAGE}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric.nn import SAGEConv

from workflow.wsi.mil import GraphLayer


class GraphSAGE(GraphLayer):
    """One GraphSAGE layer (mean aggregation, root weight): (x, edge_index) -> (N, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__(in_dim, out_dim, heads, dropout)
        self.conv = SAGEConv(in_dim, out_dim, aggr="mean", root_weight=True)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.conv(x, edge_index)
