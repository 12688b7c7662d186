"""DAS-MIL as the reference code runs it, per dataset: ``preset: <name>`` in an experiment (or
in a dataset's ``train``) takes these settings in place of the model's own defaults; the
experiment's explicit keys still win.

Read from mil4wsi (github.com/aimagelab/mil4wsi, the DAS-MIL authors' code):
``utilsmil4wsi/experiments.py`` (``launch_DASMIL_cam``, ``launch_DASMIL_lung``) over the
defaults of ``utilsmil4wsi/parser.py``, as ``models/dasmil/dasmil.py`` and
``models/utils/basemodel.py`` use them:

- per-scale GNN: one GAT layer (3 heads, averaged, attention dropout 0.2) that keeps the input
  width, no activation after it (``scale_projection: false``); the joint GAT layer maps to
  ``c_hidden``;
- ``--dropout`` is on by default: ``dropout_node`` with its default p = 0.5 before every GNN
  step in training (``node_dropout: 0.5``);
- ``--residual`` (lung): ``x + GLU(gnn(x))`` after every GNN step, the GLU
  ``x * sigmoid(MLP(x))`` with an ELU MLP halving the width; the joint layer's residual needs
  ``c_hidden`` equal to the input width (384, the DINO ViT-S/16 features);
- the x10 (student) head reads only the nodes that have a child at the teacher's scale
  (``feats[childof.unique()]``: ``student_nodes: parents``);
- loss: teacher bag + max-instance BCE; student max-instance BCE with its bag term weighted
  ``1 - lamb`` = 0; MSE to the max of the children (``--max``); bag KL at T = 1.5; the
  prediction is the teacher's (x20) bag.

Camelyon16 uses x10 + x20 (``scale: "23"``) and ``c_hidden`` 256; TCGA lung uses x5 + x20
(``scale: "13"``), ``c_hidden`` 384 and the residual GLUs. Both train 200 epochs with Adam
(2e-4, betas 0.5/0.9, weight decay 5e-3) and a cosine schedule to 5e-6: the track's ``train``
defaults already.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MIL4WSI: dict[str, Any] = {
    "hidden": 256,
    "heads": 3,
    "gnn": "gat",
    "dropout": 0.2,
    "node_dropout": 0.5,
    "scale_projection": False,
    "residual": False,
    "student_nodes": "parents",
    "q_dim": 128,
    "distill": True,
    "temperature": 1.5,
    "mse_weight": 1.0,
    "kl_weight": 1.0,
    "bag_weight": 1.0,
    "max_weight": 1.0,
    "student_bag_weight": 0.0,
    "child_pool": "max",
    "predict": "teacher",
}

#: DAS-MIL settings by preset name; scales index the tiled magnifications [5, 10, 20].
PRESETS: dict[str, dict[str, Any]] = {
    "mil4wsi_camelyon16": {**_MIL4WSI, "scales": [-2, -1]},
    "mil4wsi_tcga_lung": {**_MIL4WSI, "scales": [0, -1], "hidden": 384, "residual": True},
}


def preset_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``settings['preset']`` (empty without one); an unknown name is an error
    that lists the known ones."""
    name = settings.get("preset")
    if not name:
        return {}
    if name not in PRESETS:
        raise ValueError(f"unknown wsi preset {name!r}; choose from {sorted(PRESETS)}")
    return dict(PRESETS[name])
