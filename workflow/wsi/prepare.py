"""The preparation stages over a whole dataset: segment -> tile -> features -> graph.

Each stage reads the previous stage's ``index.tsv`` (one row per slide), does its work per
slide, writes one file per slide into its own folder and then its ``index.tsv`` (the rule's
declared output) with the columns it adds. A damaged slide follows ``on_bad_sample``: with
``skip`` it is dropped, counted and listed in ``skipped.tsv``; with ``fail`` the stage stops.
Feature files carry a key of what made them (the settings, the tiles' content and the slide
file's size and time), so a rerun after a kill skips the slides done and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from workflow.common.atomic import atomic_path, write_text
from workflow.common.config import config_hash
from workflow.common.errors import InputError, Skips
from workflow.common.images import decode_image
from workflow.wsi.labels import read_labels
from workflow.wsi.segment import TissueMask, segment_tissue, write_pngs
from workflow.wsi.slide import open_slide
from workflow.wsi.tiling import read_tiling, tile_slide, tiling_digest, write_tiling

log = logging.getLogger("lsai.wsi.prepare")


def read_index(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", dtype={"slide_id": str})
    except FileNotFoundError:
        raise InputError(path, "index not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable TSV index: {err}") from None
    if "slide_id" not in table.columns:
        raise InputError(path, "index lacks the slide_id column")
    return table


def _write_index(rows: list[dict[str, Any]], path: Path, skips: Skips, skipped: Path) -> None:
    if not rows:
        reasons = "; ".join(f"{item}: {problem}" for _, item, problem in skips.rows[:3])
        more = f"; {len(skips) - 3} more" if len(skips) > 3 else ""
        raise InputError(path.parent, f"no slide left ({len(skips)} skipped: {reasons}{more})")
    write_text(skipped, skips.to_tsv())
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
    log.info("%d slides -> %s; %d skipped (listed in %s)", len(rows), path, len(skips), skipped)


def run_per_slide(
    rows: list[dict[str, Any]],
    work: Callable[[dict[str, Any]], dict[str, Any]],
    policy: str,
    index: Path,
    skipped: Path,
    desc: str,
    resumable: bool = False,
) -> None:
    """``work`` on each row, then the index and its ``skipped.tsv``; a slide's InputError is
    skipped (and counted) or stops the stage. A stage that fails removes the per-slide files
    it wrote, so nothing it leaves looks done; a ``resumable`` stage keeps them (each is
    complete, and keyed so that a rerun skips only what is still valid)."""
    out = index.parent
    before = set(out.iterdir()) if out.is_dir() else set()
    skips, done = Skips(), []
    try:
        for row in tqdm(rows, desc=desc, mininterval=5):
            try:
                done.append({**row, **work(row)})
            except InputError as err:
                skips.handle(err, str(row["slide_id"]), policy, log)
        _write_index(done, index, skips, skipped)
    except BaseException:
        if not resumable and out.is_dir():
            for path in set(out.iterdir()) - before:
                if path.is_file():
                    path.unlink()
        raise


def segment_dataset(
    slides_dir: Path,
    labels_csv: Path,
    index: Path,
    skipped: Path,
    settings: Mapping[str, Any],
    policy: str,
    mpp: float | None = None,
) -> None:
    """Tissue mask + thumbnail PNGs per slide (for tiling and the report's heatmaps)."""
    out = index.parent
    labels = read_labels(labels_csv, slides_dir)
    rows = [
        {"slide_id": s.slide_id, "label": s.label, "split": s.split, "slide": str(s.path)}
        for s in labels
    ]

    def work(row: dict[str, Any]) -> dict[str, Any]:
        with open_slide(row["slide"], mpp=mpp) as slide:
            tissue = segment_tissue(slide, **settings)
            resolution = slide.mpp
        thumbnail, mask = out / f"{row['slide_id']}.thumb.png", out / f"{row['slide_id']}.mask.png"
        write_pngs(tissue, thumbnail, mask)
        return {
            "mpp": resolution,
            "thumbnail": str(thumbnail),
            "mask": str(mask),
            "mask_downsample": tissue.downsample,
            "mask_level": tissue.level,
            "threshold": tissue.threshold,
            "tissue_fraction": round(tissue.fraction, 4),
        }

    run_per_slide(rows, work, policy, index, skipped, "segment")


def _png(path: Path) -> np.ndarray:
    return np.asarray(decode_image(path, mode=None))


def load_mask(row: Mapping[str, Any]) -> TissueMask:
    """The segment stage's mask of one slide, as tiling needs it."""
    return TissueMask(
        mask=_png(Path(row["mask"])) > 0,
        downsample=float(row["mask_downsample"]),
        thumbnail=_png(Path(row["thumbnail"])),
        level=int(row["mask_level"]),
        threshold=float(row["threshold"]),
    )


def tile_dataset(
    segments: Path, index: Path, skipped: Path, settings: Mapping[str, Any], policy: str
) -> None:
    """Coordinates of every tissue tile at every scale, with parents (one HDF5 per slide)."""
    out = index.parent
    rows = read_index(segments).to_dict("records")
    min_tissue = settings["min_tissue"]

    def work(row: dict[str, Any]) -> dict[str, Any]:
        with open_slide(row["slide"], mpp=float(row["mpp"]), probe=False) as slide:
            tiling = tile_slide(
                slide,
                load_mask(row),
                settings["magnifications"],
                settings["patch_size"],
                {float(k): v for k, v in min_tissue.items()}
                if isinstance(min_tissue, Mapping)
                else min_tissue,
                row["slide_id"],
                settings["keep_ancestors"],
            )
        if not len(tiling.scales[-1]):
            raise InputError(row["slide"], "no tile at the finest scale holds enough tissue")
        path = out / f"{row['slide_id']}.h5"
        write_tiling(tiling, path)
        return {"tiles": str(path), **{f"n_{k}": v for k, v in tiling.counts.items()}}

    run_per_slide(rows, work, policy, index, skipped, "tile")


def features_dataset(
    tiles: Path,
    index: Path,
    skipped: Path,
    settings: Mapping[str, Any],
    policy: str,
    device: str = "cpu",
    workers: int = 0,
) -> None:
    """Frozen-encoder features of every tile, each scale through its encoder (one HDF5 per
    slide; resumable per slide)."""
    from workflow.wsi.features import build_encoders, encode_slide

    out = index.parent
    rows = read_index(tiles).to_dict("records")
    encoder = build_encoders(settings)

    def work(row: dict[str, Any]) -> dict[str, Any]:
        path = out / f"{row['slide_id']}.h5"
        stamp = features_key(settings, Path(row["tiles"]))
        if _stamp(path) != stamp:
            encode_slide(
                Path(row["tiles"]),
                path,
                encoder,
                batch_size=settings["batch_size"],
                workers=workers,
                device=device,
                attrs={"settings_hash": stamp},
                input_size=settings.get("input_size"),
            )
        else:
            log.info("%s: features already computed from these tiles and settings", row["slide_id"])
        return {"features": str(path)}

    run_per_slide(rows, work, policy, index, skipped, "features", resumable=True)


def features_key(settings: Mapping[str, Any], tiles: Path) -> str:
    """What a slide's features depend on: the stage's settings, the tiling's content (not
    its file: a rerun of tile rewrites it) and the slide file's size and modification time."""
    tiling = read_tiling(tiles)
    try:
        slide = Path(tiling.slide_path).stat()
    except OSError:
        raise InputError(tiling.slide_path, "slide named by the tiling file not found") from None
    return config_hash(
        {"settings": dict(settings), "tiles": tiling_digest(tiling),
         "slide": [slide.st_size, slide.st_mtime_ns]}
    )  # fmt: skip


def _stamp(path: Path) -> str | None:
    """The key a finished feature file was made with, None when there is none."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as h5:
            return str(h5.attrs.get("settings_hash", ""))
    except OSError:
        return None


def graph_dataset(features: Path, index: Path) -> None:
    """One torch_geometric graph per slide (spatial + parent-child edges), as ``.pt`` files.

    The features are this workflow's own files: a problem with one is a bug, not damaged
    data, so every slide must convert.
    """
    from workflow.wsi.graph import graph_from_features, save_graph

    out = index.parent
    rows = read_index(features).to_dict("records")

    def work(row: dict[str, Any]) -> dict[str, Any]:
        graph = graph_from_features(row["features"], int(row["label"]), str(row["slide_id"]))
        path = out / f"{row['slide_id']}.pt"
        save_graph(graph, path)
        return {"graph": str(path), "nodes": graph.num_nodes, "edges": graph.edge_index.shape[1]}

    run_per_slide(rows, work, "fail", index, out / "skipped.tsv", "graph")


def split_files(graphs: Path, split: str) -> list[str]:
    """The graph files of one split, from the graph stage's index."""
    table = read_index(graphs)
    for column in ("graph", "split"):
        if column not in table.columns:
            raise InputError(graphs, f"index lacks the {column} column")
    files = table.loc[table["split"] == split, "graph"].tolist()
    if not files:
        raise InputError(graphs, f"no slide in the {split} split")
    return files


def labels_dataset(
    manifests: Mapping[str, str],
    positive: str,
    slides_dir: Path,
    labels: Path,
    skipped: Path,
    settings: Mapping[str, Any],
    policy: str,
) -> None:
    """The labels CSV of a TCGA dataset from its GDC manifests (see workflow.wsi.gdc);
    ``settings`` is the dataset's ``gdc`` section (split fractions, seed, diagnostic_only)."""
    from workflow.wsi.gdc import labels_from_manifests

    skips = Skips()
    fractions = {k: float(settings[k]) for k in ("train", "val", "test")}
    rows = labels_from_manifests(
        manifests, positive, slides_dir, fractions, int(settings["seed"]),
        bool(settings["diagnostic_only"]), policy, skips,
    )  # fmt: skip
    write_text(skipped, skips.to_tsv())
    table = pd.DataFrame(rows)[["slide_id", "label", "split", "path", "patient"]]
    with atomic_path(labels) as tmp:
        table.to_csv(tmp, index=False)
    counts = table.groupby(["split", "label"]).size().to_dict()
    log.info(
        "%d slides -> %s (split, label: %s); %d skipped", len(table), labels, counts, len(skips)
    )


def mil4wsi_dataset(
    graphs_dir: Path, labels_csv: Path, index: Path, skipped: Path, policy: str, trusted: bool
) -> None:
    """The released mil4wsi graph files (``<slide_id>.pt``, or the labels' ``path`` column)
    mapped to this track's graph layout, in place of segment -> tile -> features -> graph."""
    from workflow.wsi.graph import load_mil4wsi, save_graph

    out = index.parent
    labels = read_labels(labels_csv, graphs_dir, suffixes=(".pt",))
    rows = [{"slide_id": s.slide_id, "label": s.label, "split": s.split, "source": str(s.path)}
            for s in labels]  # fmt: skip

    def work(row: dict[str, Any]) -> dict[str, Any]:
        graph = load_mil4wsi(row["source"], row["slide_id"], trusted)
        if int(graph.y[0]) != row["label"]:
            raise InputError(
                row["source"],
                f"label {int(graph.y[0])} disagrees with {labels_csv} ({row['label']})",
            )
        path = out / f"{row['slide_id']}.pt"
        save_graph(graph, path)
        return {"graph": str(path), "nodes": graph.num_nodes, "edges": graph.edge_index.shape[1]}

    run_per_slide(rows, work, policy, index, skipped, "mil4wsi")
