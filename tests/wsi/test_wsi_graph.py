"""Slide graphs: neighbours, parents, edge sets, files, and the mil4wsi mapping."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from tests.wsi.conftest import save_as_mil4wsi
from workflow.common.errors import InputError
from workflow.wsi.graph import (
    ScaleFeatures,
    build_graph,
    graph_from_features,
    grid_neighbours,
    load_graph,
    load_mil4wsi,
    save_graph,
)

PATCH = 256


def scale(cells, parent, downsample, dim=4, seed=0, magnification=0.0):
    """Tiles at the given grid cells (x, y) of a scale with this downsample."""
    stride = PATCH * downsample
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    return ScaleFeatures(
        features=rng.normal(size=(len(cells), dim)).astype(np.float32),
        coords=cells * int(stride) + 1000,  # an offset: cells come from coords // stride
        parent=np.asarray(parent, dtype=np.int64),
        downsample=downsample,
        patch_size=PATCH,
        magnification=magnification,
    )


def children(cell):
    x, y = cell
    return [(2 * x + dx, 2 * y + dy) for dx in (0, 1) for dy in (0, 1)]


@pytest.fixture
def three_scales():
    """x5: a 2 x 1 row; x10: all 8 children; x20: 3 of one x10 tile's children + 1 other."""
    coarse = [(0, 0), (1, 0)]
    mid = [c for p in coarse for c in children(p)]  # rows 0-3 children of 0, rows 4-7 of 1
    mid_parent = [0] * 4 + [1] * 4
    # x10 rows 0..7: (0,0),(0,1),(1,0),(1,1),(2,0),(2,1),(3,0),(3,1): a full 4 x 2 block
    fine = children(mid[3])[:3] + [children(mid[4])[0]]
    fine_parent = [3, 3, 3, 4]
    return [
        scale(coarse, [-1, -1], downsample=8, magnification=5),
        scale(mid, mid_parent, downsample=4, seed=1, magnification=10),
        scale(fine, fine_parent, downsample=2, seed=2, magnification=20),
    ]


def pairs(edges: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in edges.t()}


def brute_neighbours(cells) -> set[tuple[int, int]]:
    cells = np.asarray(cells)
    out = set()
    for i, a in enumerate(cells):
        for j, b in enumerate(cells):
            if i != j and np.abs(a - b).max() == 1:
                out.add((i, j))
    return out


def test_three_scale_graph_has_the_known_edges(three_scales):
    g = build_graph(three_scales, label=1, slide_id="s1")
    assert g.num_nodes == 2 + 8 + 4 and g.x.dtype == torch.float32 and g.x.shape[1] == 4
    assert g.level.tolist() == [0] * 2 + [1] * 8 + [2] * 4
    assert g.child_of.tolist() == [-1, -1] + [0] * 4 + [1] * 4 + [5, 5, 5, 6]
    assert g.y.tolist() == [1] and g.slide_id == "s1"
    # undirected pairs: x5 1; x10 a 4 x 2 block: 6 horizontal + 4 vertical + 6 diagonal = 16;
    # x20 three tiles of one 2 x 2 block (3 pairs) + cell (4, 0), two rows away from them
    assert g.edge_spatial.shape[1] == 2 * (1 + 16 + 3)
    assert g.edge_cross.shape[1] == 2 * (8 + 4)
    assert g.edge_index.shape[1] == g.edge_spatial.shape[1] + g.edge_cross.shape[1]
    spatial = pairs(g.edge_spatial)
    assert all((b, a) in spatial for a, b in spatial), "spatial edges are not symmetric"
    assert all(a != b for a, b in pairs(g.edge_index)), "self loop"
    assert all(g.level[a] == g.level[b] for a, b in spatial)
    cross = pairs(g.edge_cross)
    kids = [i for i in range(g.num_nodes) if g.child_of[i] >= 0]
    assert cross == {(i, int(g.child_of[i])) for i in kids} | {
        (int(g.child_of[i]), i) for i in kids
    }
    assert len(pairs(g.edge_index)) == g.edge_index.shape[1], "duplicate edges"


def test_neighbours_match_brute_force_on_an_irregular_tissue_shape():
    rng = np.random.default_rng(4)
    grid = np.array([(x, y) for x in range(12) for y in range(9)])
    cells = grid[rng.random(len(grid)) < 0.6]
    cells = cells[rng.permutation(len(cells))]  # order must not matter
    edges = grid_neighbours(cells * 512 + 7, stride=512.0)
    assert pairs(torch.from_numpy(edges)) == brute_neighbours(cells)
    assert edges.shape[1] == len(brute_neighbours(cells))
    # a stride rounded by the tiling (1020 px tiles, 255 x 4.0 = 1019.6 nominal), far out
    far = grid_neighbours(cells * 1020 + 10**6, stride=1019.6)
    assert pairs(torch.from_numpy(far)) == brute_neighbours(cells)


def test_tiles_sharing_a_cell_and_bad_parents_are_rejected(three_scales):
    with pytest.raises(ValueError, match="share a grid cell"):
        grid_neighbours(np.array([[0, 0], [10, 10]]), stride=512.0)
    bad = three_scales[2]
    bad.parent = np.array([3, 3, 3, 9])  # x10 has 8 rows
    with pytest.raises(ValueError, match="parent index"):
        build_graph(three_scales, 0, "s")
    with pytest.raises(ValueError, match="ordered coarse"):
        build_graph(three_scales[::-1], 0, "s")


def test_feature_file_to_graph_and_back(three_scales, tmp_path):
    h5_path = tmp_path / "s1.h5"
    with h5py.File(h5_path, "w") as h5:
        for name, s in zip(("x5", "x10", "x20"), three_scales, strict=True):
            group = h5.create_group(name)  # h5py lists x10, x20, x5: order by magnification
            group.attrs.update(
                {"downsample": s.downsample, "patch_size": PATCH, "magnification": s.magnification}
            )
            group["features"], group["coords"], group["parent"] = s.features, s.coords, s.parent
    g = graph_from_features(h5_path, 0, "s1")
    assert g.scale_names == ["x5", "x10", "x20"] and g.level.tolist()[-1] == 2
    reference = build_graph(three_scales, 0, "s1")
    assert torch.equal(g.x, reference.x) and torch.equal(g.edge_index, reference.edge_index)
    save_graph(g, tmp_path / "g.pt")
    back = load_graph(tmp_path / "g.pt")
    assert torch.equal(back.edge_spatial, g.edge_spatial) and back.slide_id == "s1"


def test_graph_files_missing_corrupt_or_foreign_raise_input_errors(three_scales, tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_graph(tmp_path / "missing.pt")
    save_graph(build_graph(three_scales, 1, "s"), tmp_path / "g.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "g.pt").read_bytes()[:200])
    with pytest.raises(InputError, match="not a readable graph"):
        load_graph(tmp_path / "cut.pt")
    torch.save({"x": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(InputError, match="not a slide graph"):
        load_graph(tmp_path / "dict.pt")
    torch.save(Data(x=torch.zeros(2, 3)), tmp_path / "bare.pt")
    with pytest.raises(InputError, match="lacks"):
        load_graph(tmp_path / "bare.pt")
    with pytest.raises(InputError, match="feature file not found"):
        graph_from_features(tmp_path / "none.h5", 0, "s")


def mil4wsi_file(path, three_scales):
    """Our three-scale graph as a mil4wsi file of its x10 + x20 scales; returns the graph we
    expect back (x10 as roots)."""
    save_as_mil4wsi(build_graph(three_scales, 1, "s1"), path, "tumor_001_1", first_level=1)
    mid_as_root = dataclasses.replace(three_scales[1], parent=np.full(8, -1))  # x5 not kept
    return build_graph([mid_as_root, three_scales[2]], 1, "s1")


def test_mil4wsi_graphs_map_to_our_layout(three_scales, tmp_path):
    expected = mil4wsi_file(tmp_path / "data_0.pt", three_scales)
    g = load_mil4wsi(tmp_path / "data_0.pt")
    assert g.slide_id == "tumor_001" and g.scale_names == ["x10", "x20"]
    assert g.level.tolist() == [0] * 8 + [1] * 4
    # regrouped by scale: the same rows as our own graph of the two scales
    assert torch.equal(g.x, expected.x)
    assert g.child_of.tolist() == [-1] * 8 + [3, 3, 3, 4]
    assert pairs(g.edge_spatial) == pairs(expected.edge_spatial)
    assert pairs(g.edge_cross) == pairs(expected.edge_cross) and g.edge_cross.shape[1] == 8
    assert torch.equal(g.coords, expected.coords)


def test_unrecognised_mil4wsi_files_are_refused(tmp_path):
    torch.save(Data(x=torch.zeros(3, 2), edge_index=torch.zeros(2, 0).long()), tmp_path / "a.pt")
    with pytest.raises(InputError, match="lacks"):
        load_mil4wsi(tmp_path / "a.pt")
    torch.save({"model": 1}, tmp_path / "b.pt")
    with pytest.raises(InputError, match="not a mil4wsi graph"):
        load_mil4wsi(tmp_path / "b.pt")
    torch.save(np.zeros(3), tmp_path / "c.pt")  # needs a non-allow-listed global
    with pytest.raises(InputError, match="trusted=True"):
        load_mil4wsi(tmp_path / "c.pt")
