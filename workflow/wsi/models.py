"""The WSI models by name (``MODELS``): DAS-MIL (dasmil.py) and the MIL baselines
(baselines.py), plain ``nn.Module``s over one slide graph (shared parts: mil.py).

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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from workflow.wsi.baselines import ABMIL, DSMILSingle, MaxPool, MeanPool
from workflow.wsi.dasmil import DASMIL
from workflow.wsi.mil import DSMILHead, Output, distillation_terms
from workflow.wsi.presets import preset_settings

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
    """The model named by ``settings['model']``; keys it does not read are ignored. A
    ``preset`` (DAS-MIL's, :mod:`workflow.wsi.presets`) replaces the model's defaults; keys
    set in ``settings`` still win. The baselines read no preset key."""
    name = settings["model"]
    defaults = model_defaults(name)
    preset = preset_settings(settings) if name == "dasmil" else {}
    chosen = {k: v for k, v in preset.items() if k in defaults}
    chosen |= {k: settings[k] for k in defaults if k in settings}
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
