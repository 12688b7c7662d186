"""One slide as one multi-scale graph: the input of DAS-MIL and of the MIL baselines.

Nodes are the tiles of every scale, concatenated coarse to fine (``level`` 0 = coarsest).
Edges: 8-neighbours within each scale (``edge_spatial``) and parent <-> child across adjacent
scales (``edge_cross``); ``edge_index`` holds both. Every edge set is stored in both directions,
so models can use any of them as an undirected graph. Neighbours come from grid cells
(offsets in strides) looked up in a sorted key array: O(N log N), no pairwise distances.

Graph files are pickled ``Data`` objects; they are read back with ``weights_only=True`` and an
allow-list of torch_geometric's storage classes, so loading one never runs arbitrary code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage

from workflow.common.atomic import atomic_path
from workflow.common.checkpoint import safe_load
from workflow.common.errors import InputError

log = logging.getLogger("lsai.wsi.graph")

# The eight neighbour offsets (dx, dy) of a grid cell.
OFFSETS = np.array(
    [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)], dtype=np.int64
)
REQUIRED = ("x", "level", "child_of", "edge_index", "edge_spatial", "edge_cross", "y")
SAFE_GLOBALS = [Data, GlobalStorage, DataEdgeAttr, DataTensorAttr]


@dataclass
class ScaleFeatures:
    """The tiles of one scale: what the feature stage writes per scale group."""

    features: np.ndarray  # (N, D) float
    coords: np.ndarray  # (N, 2) int64 level-0 (x, y) of each tile's top-left corner
    parent: np.ndarray  # (N,) int64 row in the next-coarser scale, -1 for the coarsest
    downsample: float  # level-0 px per patch px
    patch_size: int = 256
    name: str = ""
    magnification: float = 0.0
    footprint: float | None = None  # level-0 px per tile when the tiling rounded it

    @property
    def stride(self) -> float:
        """Level-0 distance between neighbouring tiles of this scale."""
        return float(self.footprint or self.patch_size * self.downsample)

    def __len__(self) -> int:
        return len(self.features)


def grid_neighbours(coords: np.ndarray, stride: float) -> np.ndarray:
    """(2, E) directed 8-neighbour pairs (both directions) of tiles on a regular grid.

    Each tile's cell is its offset from the corner tile in strides; a key per cell is sorted
    once and each of the eight shifted keys is found with ``searchsorted``. Two tiles in one
    cell (which a tiling never writes) would make the lookup ambiguous, so they are rejected.
    """
    n = len(coords)
    if n == 0:
        return np.zeros((2, 0), dtype=np.int64)
    coords = np.asarray(coords, dtype=np.float64)
    # rounded offsets from the corner tile: robust to a stride off by a fraction of a pixel
    cells = np.rint((coords - coords.min(axis=0)) / stride).astype(np.int64) + 1  # >= 1
    height = int(cells[:, 1].max()) + 2
    keys = cells[:, 0] * height + cells[:, 1]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if n > 1 and (np.diff(sorted_keys) == 0).any():
        raise ValueError("two tiles of one scale share a grid cell: coords are not on its grid")
    sources, targets = [], []
    for dx, dy in OFFSETS:
        wanted = keys + dx * height + dy
        pos = np.minimum(np.searchsorted(sorted_keys, wanted), n - 1)
        hit = sorted_keys[pos] == wanted
        sources.append(np.nonzero(hit)[0])
        targets.append(order[pos[hit]])
    return np.stack([np.concatenate(sources), np.concatenate(targets)]).astype(np.int64)


def build_graph(
    scales: Sequence[ScaleFeatures], label: int, slide_id: str, check: bool = True
) -> Data:
    """The multi-scale graph of one slide; ``scales`` ordered coarse to fine.

    ``parent`` of scale ``s`` indexes rows of scale ``s - 1``; it becomes ``child_of``, the
    global node index of the parent (-1 for roots: the coarsest scale, or a tile whose
    parent was not kept).
    """
    if not scales:
        raise ValueError("a graph needs at least one scale")
    dims = {s.features.shape[1] for s in scales if len(s)}
    if len(dims) > 1:
        raise ValueError(f"scales have different feature widths {sorted(dims)}")
    offsets = np.cumsum([0] + [len(s) for s in scales])
    spatial, child_of = [], []
    for i, scale in enumerate(scales):
        n = len(scale)
        if scale.coords.shape != (n, 2) or scale.parent.shape != (n,):
            raise ValueError(
                f"scale {i}: coords {scale.coords.shape} / parent {scale.parent.shape} "
                f"do not match {n} feature rows"
            )
        spatial.append(grid_neighbours(scale.coords, scale.stride) + offsets[i])
        parent = np.asarray(scale.parent, dtype=np.int64)
        if i == 0 and (parent >= 0).any():
            raise ValueError("the coarsest scale has parents: scales must be ordered coarse->fine")
        if i > 0 and ((parent < -1) | (parent >= len(scales[i - 1]))).any():
            raise ValueError(f"scale {i}: parent index outside the coarser scale's rows")
        child_of.append(np.where(parent >= 0, parent + (offsets[i - 1] if i else 0), -1))
    child = np.concatenate(child_of)
    kids = np.nonzero(child >= 0)[0]
    cross = np.concatenate(
        [np.stack([kids, child[kids]]), np.stack([child[kids], kids])], axis=1
    ).astype(np.int64)
    edge_spatial = torch.from_numpy(np.concatenate(spatial, axis=1))
    edge_cross = torch.from_numpy(cross)
    width = dims.pop() if dims else 0
    graph = Data(
        x=torch.from_numpy(
            np.concatenate([np.asarray(s.features, np.float32).reshape(-1, width) for s in scales])
        ),
        edge_index=torch.cat([edge_spatial, edge_cross], dim=1),
        edge_spatial=edge_spatial,
        edge_cross=edge_cross,
        level=torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(scales)]),
        child_of=torch.from_numpy(child),
        coords=torch.from_numpy(np.concatenate([np.asarray(s.coords, np.int64) for s in scales])),
        y=torch.tensor([int(label)], dtype=torch.long),
        slide_id=str(slide_id),
        scale_names=[s.name or f"scale{i}" for i, s in enumerate(scales)],
        magnifications=[float(s.magnification) for s in scales],
        downsamples=[float(s.downsample) for s in scales],
        patch_size=int(scales[-1].patch_size),
    )
    if check:
        problem = check_graph(graph)
        if problem:
            raise ValueError(problem)
    return graph


def check_graph(graph: Data) -> str | None:
    """What is wrong with a slide graph, or None: the invariants models rely on."""
    missing = [k for k in REQUIRED if k not in graph]
    if missing:
        return f"graph lacks {missing}"
    n = graph.num_nodes
    if graph.level.shape != (n,) or graph.child_of.shape != (n,):
        return "level / child_of do not have one entry per node"
    for key in ("edge_index", "edge_spatial", "edge_cross"):
        edges = graph[key]
        if edges.dim() != 2 or edges.shape[0] != 2:
            return f"{key} is not a (2, E) tensor"
        if edges.numel() and (edges.min() < 0 or edges.max() >= n):
            return f"{key} points outside the {n} nodes"
    kids = (graph.child_of >= 0).nonzero().view(-1)
    if (graph.level[graph.child_of[kids]] != graph.level[kids] - 1).any():
        return "child_of does not point to the next-coarser scale"
    return None


def read_feature_file(path: str | PathLike[str]) -> tuple[list[ScaleFeatures], dict[str, Any]]:
    """The per-scale groups of a feature HDF5 (``features``, ``coords``, ``parent``; attrs
    ``downsample``, ``patch_size``, ``magnification``), coarse to fine, and the file's attrs."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
            groups = [h5[name] for name in h5 if isinstance(h5[name], h5py.Group)]
            groups.sort(key=lambda g: float(g.attrs.get("magnification", 0.0)))
            scales = [
                ScaleFeatures(
                    features=g["features"][()],
                    coords=g["coords"][()].astype(np.int64),
                    parent=g["parent"][()].astype(np.int64),
                    downsample=float(g.attrs["downsample"]),
                    patch_size=int(g.attrs["patch_size"]),
                    name=g.name.strip("/"),
                    magnification=float(g.attrs["magnification"]),
                    footprint=float(g.attrs["footprint"]) if "footprint" in g.attrs else None,
                )
                for g in groups
            ]
    except FileNotFoundError:
        raise InputError(path, "feature file not found") from None
    except (OSError, KeyError) as err:
        raise InputError(path, f"not a readable feature file: {err}") from None
    if not scales:
        raise InputError(path, "feature file holds no scale group")
    return scales, attrs


def graph_from_features(path: str | PathLike[str], label: int, slide_id: str) -> Data:
    """Feature HDF5 -> slide graph; inconsistent arrays are the file's fault (InputError)."""
    scales, _ = read_feature_file(path)
    try:
        return build_graph(scales, label, slide_id)
    except ValueError as err:
        raise InputError(path, str(err)) from None


def save_graph(graph: Data, path: str | PathLike[str]) -> None:
    """Atomic ``torch.save`` of a slide graph."""
    with atomic_path(path) as tmp:
        torch.save(graph, tmp)


def load_graph(path: str | PathLike[str]) -> Data:
    """A graph written by :func:`save_graph`, checked; InputError when missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "graph file not found")
    try:
        graph = safe_load(path, SAFE_GLOBALS)
    except Exception as err:  # truncated zip, foreign pickle, ...
        raise InputError(path, f"not a readable graph file: {str(err).splitlines()[0]}") from None
    if not isinstance(graph, Data):
        raise InputError(path, f"not a slide graph (holds {type(graph).__name__})")
    problem = check_graph(graph)
    if problem:
        raise InputError(path, problem)
    return graph


def load_mil4wsi(
    path: str | PathLike[str], slide_id: str | None = None, trusted: bool = False
) -> Data:
    """A graph file of the mil4wsi / DAS-MIL release mapped to this module's layout.

    mil4wsi's ``3-prepare-geomDataset/prepare_dataset.py`` saves one ``Data`` per slide with:

    - ``x`` (N, D): features of all kept scales, in depth-first tree order (a parent is
      followed by its children), *not* grouped by scale;
    - ``level`` (N,): mil4wsi's scale number, 1 = x5, 2 = x10, 3 = x20 (larger = finer);
      only the scales asked for at extraction are present (default ``--levels 2 3``);
    - ``childof`` (N,): row of the parent in the same file, -1 for roots (a scale whose
      parent scale was not extracted has -1 throughout);
    - ``edge_index``: the full symmetric adjacency (8-neighbours + parent-child);
      ``edge_index_filtered``: the same without cross-scale edges; ``edge_index_2`` /
      ``edge_index_3``: per-scale adjacency in per-scale local numbering (ignored here);
    - ``y`` (1,), ``name`` (``<slide>_<label>``), ``x_coord`` / ``y_coord`` (patch
      coordinates as written in the patch file names), ``patch_label`` (optional).

    Mapping: nodes are regrouped by scale (stable sort on ``level``), ``level`` becomes
    0-based from the coarsest scale present, ``childof`` is renumbered into ``child_of``;
    ``edge_spatial`` is ``edge_index_filtered`` (or ``edge_index`` without cross-scale pairs)
    and ``edge_cross`` is rebuilt from ``child_of``. Coordinates are kept as stored (their
    unit depends on how the patches were extracted). A file lacking ``x``, ``level``,
    ``childof`` or ``y`` is rejected with InputError.

    The files are pickles: they are read with ``weights_only=True`` and torch_geometric's
    storage classes allowed; a file that needs more (an old torch_geometric) is refused unless
    ``trusted`` (full unpickling: only for files from a source you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mil4wsi graph file not found")
    try:
        raw = safe_load(path, SAFE_GLOBALS)
    except Exception as err:
        if not trusted:
            raise InputError(
                path,
                "not loadable as a safe torch_geometric Data "
                f"({str(err).splitlines()[0][:200]}); pass trusted=True only for a source "
                "you trust",
            ) from None
        try:
            raw = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err2:
            raise InputError(path, f"not a readable torch file: {err2}") from None
    if not isinstance(raw, Data):
        raise InputError(path, f"not a mil4wsi graph (holds {type(raw).__name__})")
    missing = [k for k in ("x", "level", "childof", "y") if getattr(raw, k, None) is None]
    if missing:
        raise InputError(path, f"not a mil4wsi graph: lacks {missing}")
    x = torch.as_tensor(raw.x, dtype=torch.float32)
    n = x.shape[0]
    level_raw = torch.as_tensor(raw.level).long().view(-1)
    childof = torch.as_tensor(raw.childof).long().view(-1)
    if level_raw.numel() != n or childof.numel() != n:
        raise InputError(path, f"level/childof lengths differ from the {n} nodes")
    if ((childof < -1) | (childof >= n)).any():
        raise InputError(path, "childof points outside the nodes")
    present = level_raw.unique()  # sorted: coarse (small) to fine (large)
    level = torch.searchsorted(present, level_raw)
    order = torch.sort(level, stable=True).indices  # new -> old
    new_of_old = torch.empty(n, dtype=torch.long)
    new_of_old[order] = torch.arange(n)
    child_old = childof[order]
    child_of = torch.where(child_old >= 0, new_of_old[child_old.clamp(min=0)], -1)
    level = level[order]
    kids = (child_of >= 0).nonzero().view(-1)
    if (level[child_of[kids]] != level[kids] - 1).any():
        # a parent two scales up (the middle scale was not extracted): not our hierarchy
        child_of[kids[level[child_of[kids]] != level[kids] - 1]] = -1
        kids = (child_of >= 0).nonzero().view(-1)
    edge_cross = torch.cat(
        [torch.stack([kids, child_of[kids]]), torch.stack([child_of[kids], kids])], dim=1
    )
    filtered = getattr(raw, "edge_index_filtered", None)
    if filtered is None:
        full = getattr(raw, "edge_index", None)
        if full is None:
            raise InputError(path, "not a mil4wsi graph: lacks edge_index")
        full = torch.as_tensor(full).long()
        filtered = full[:, level_raw[full[0]] == level_raw[full[1]]]
    edge_spatial = new_of_old[torch.as_tensor(filtered).long()]
    edge_spatial = edge_spatial[:, edge_spatial[0] != edge_spatial[1]]
    if "x_coord" in raw and "y_coord" in raw:
        coords = torch.stack(
            [torch.as_tensor(raw.x_coord).long(), torch.as_tensor(raw.y_coord).long()], dim=1
        )[order]
    else:
        coords = torch.zeros(n, 2, dtype=torch.long)
    name = str(getattr(raw, "name", "") or path.stem)
    names = {1: "x5", 2: "x10", 3: "x20"}
    graph = Data(
        x=x[order],
        edge_index=torch.cat([edge_spatial, edge_cross], dim=1),
        edge_spatial=edge_spatial,
        edge_cross=edge_cross,
        level=level,
        child_of=child_of,
        coords=coords,
        y=torch.as_tensor(raw.y).long().view(-1)[:1],
        slide_id=slide_id or name.rsplit("_", 1)[0],
        scale_names=[names.get(int(v), f"level{int(v)}") for v in present],
        magnifications=[5.0 * 2 ** (int(v) - 1) for v in present],
        downsamples=[],
        patch_size=256,
    )
    problem = check_graph(graph)
    if problem:
        raise InputError(path, f"mil4wsi graph maps to an invalid graph: {problem}")
    return graph
