"""WSI fixtures: one small demo dataset and its tilings, built once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import demo_fixtures
from workflow.wsi.demo import DemoSettings, write_demo

# 4 slides of 4096 x 4096 px at x40: 2 tumour, 2 normal; about a second each to write.
SMALL = DemoSettings(slides=4, seed=11)


wsi_demo, wsi_manifest = demo_fixtures("wsi", write_demo, SMALL)


@pytest.fixture(scope="session")
def wsi_tiled(wsi_demo: Path, wsi_manifest: dict, tmp_path_factory: pytest.TempPathFactory):
    """slide_id -> (HDF5 path, thumbnail PNG, mask PNG) from the tiling stage."""
    from workflow.wsi.tiling import tile_file

    out = tmp_path_factory.mktemp("tiles")
    files = {}
    for entry in wsi_manifest["slides"]:
        sid = entry["slide_id"]
        paths = (out / f"{sid}.h5", out / f"{sid}.thumb.png", out / f"{sid}.mask.png")
        tile_file(wsi_demo / entry["file"], paths[0], thumbnail_png=paths[1], mask_png=paths[2])
        files[sid] = paths
    return files


def write_plain_slide(path: Path, image: np.ndarray, mpp: float | None = 0.25, levels: int = 3):
    """A pyramidal JPEG-tiled TIFF of ``image`` as OpenSlide reads it; ``mpp=None`` writes no
    resolution at all (a slide whose magnification is unknown)."""
    with tifffile.TiffWriter(path) as tif:
        for k in range(levels):
            resolution = (
                {"resolution": (1e4 / (mpp * 2**k),) * 2, "resolutionunit": "CENTIMETER"}
                if mpp
                else {}
            )
            tif.write(
                image[:: 2**k, :: 2**k],
                photometric="rgb",
                tile=(256, 256),
                compression="jpeg",
                subfiletype=int(k > 0),
                **resolution,
            )


def save_as_mil4wsi(graph, path: Path, name: str, first_level: int = 0) -> None:
    """Our ``graph`` laid out as mil4wsi's prepare_dataset.py writes it, keeping the two scales
    from ``first_level`` on: depth-first order (a parent, then its children), mil4wsi levels
    2 / 3 (x10 / x20), ``childof`` as rows of the same file, edges with and without the
    cross-scale pairs, tile-grid ``x_coord`` / ``y_coord``."""
    import torch
    from torch_geometric.data import Data

    parents = (graph.level == first_level).nonzero().view(-1).tolist()
    kids = (graph.level == first_level + 1).nonzero().view(-1).tolist()
    order = []
    for p in parents:
        order.append(p)
        order += [k for k in kids if int(graph.child_of[k]) == p]
    row = {old: new for new, old in enumerate(order)}
    childof = [row[int(graph.child_of[o])] if o in kids else -1 for o in order]

    def kept(edges):
        pairs = [
            (row[int(a)], row[int(b)]) for a, b in edges.t() if int(a) in row and int(b) in row
        ]
        return torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)

    torch.save(
        Data(
            x=graph.x[order],
            edge_index=kept(graph.edge_index),
            edge_index_filtered=kept(graph.edge_spatial),
            childof=torch.tensor(childof),
            level=graph.level[order] - first_level + 2,
            y=torch.LongTensor([int(graph.y[0])]),
            name=name,
            x_coord=graph.coords[order, 0],
            y_coord=graph.coords[order, 1],
        ),
        path,
    )


def synthetic_slide_graph(label: int, seed: int, slide_id: str, dim: int = 8):
    """A two-scale slide graph (a 4 x 3 grid of x10 tiles, 4 x20 children each) whose label
    shows only in a few x20 tiles' features; coordinates in tile-grid units."""
    from workflow.wsi.graph import ScaleFeatures, build_graph

    rng = np.random.default_rng(seed)
    coarse = np.array([(x, y) for y in range(3) for x in range(4)], dtype=np.int64)
    fine = np.array([(2 * x + dx, 2 * y + dy) for x, y in coarse for dy in (0, 1) for dx in (0, 1)])
    features = rng.normal(size=(len(fine), dim)).astype(np.float32)
    if label:
        features[rng.choice(len(fine), 4, replace=False), 0] += 4.0
    scales = [
        ScaleFeatures(
            rng.normal(size=(len(coarse), dim)).astype(np.float32), coarse * 2,
            np.full(len(coarse), -1), downsample=2.0, patch_size=1, magnification=10,
        ),
        ScaleFeatures(
            features, fine, np.repeat(np.arange(len(coarse)), 4), downsample=1.0, patch_size=1,
            magnification=20,
        ),
    ]  # fmt: skip
    return build_graph(scales, label, slide_id)
