"""``wsi_evaluate``: slide probabilities, metrics and attention scores of one trained run."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from workflow.common.atomic import atomic_path
from workflow.wsi.graph import load_graph
from workflow.wsi.train import load_module


def predict_slides(
    checkpoint: str | PathLike[str], files: Sequence[str | PathLike[str]], attention: Path
) -> pd.DataFrame:
    """Per test slide: label and probability (returned) and its heatmap scores (``attention``:
    one HDF5 group per slide with the scored tiles' level-0 ``coords``, their ``footprint``
    and ``scores``)."""
    module = load_module(checkpoint)
    rows = []
    with atomic_path(attention) as tmp, h5py.File(tmp, "w") as h5, torch.inference_mode():
        for path in files:
            graph = load_graph(path)
            out = module.predict_step(graph, 0)
            nodes = out["nodes"].long()
            level = int(graph.level[nodes[0]]) if len(nodes) else len(graph.downsamples) - 1
            group = h5.create_group(out["slide_id"])
            group["coords"] = graph.coords[nodes].numpy()
            group["scores"] = out["attention"].numpy().astype(np.float32)
            # mil4wsi graphs carry tile-grid coordinates and no downsamples: one unit per tile
            group.attrs["footprint"] = (
                round(graph.downsamples[level] * graph.patch_size) if graph.downsamples else 1
            )
            group.attrs["magnification"] = graph.magnifications[level]
            group.attrs["label"] = out["label"]
            rows.append(
                {"slide_id": out["slide_id"], "label": out["label"], "prob": out["probability"]}
            )
    return pd.DataFrame(rows)
