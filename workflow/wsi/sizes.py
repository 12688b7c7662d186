"""Sizes of the WSI track's GPU jobs for the capacity plan (workflow/common/capacity.py):
``wsi_features`` encodes every tile of every scale of every slide (unit: tiles), ``wsi_train``
steps over one training slide at a time (unit: slides).

Slides per split and tiles, in order: the tiling stage's index (one row per slide with its
split and its tiles per scale; exact); the dataset's labels CSV (slides per split, exact);
the dataset's ``size_hint`` (slides per split, tiles per slide: an estimate); else unknown.
A dataset of released mil4wsi graphs has no feature job. Kept free of torch and pandas: the
workflow imports it when parsed.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflow.common.capacity import Job, training_job
from workflow.common.experiments import enabled_datasets, runs
from workflow.common.schedule import Schedule, Size, track_schedules
from workflow.wsi.sources import converted_labels, features_settings

#: The tiling rule's index (rules/wsi.smk ``wsi_tile``): slide_id, split, n_<scale> columns.
TILES = "results/wsi/{dataset}/prep/tiles/index.tsv"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSize:
    """Slides per split and tiles of all slides (None: unknown), and where each comes from."""

    slides: Mapping[str, int] | None
    slides_source: str
    tiles: int | None
    tiles_source: str


def _rows(path: Path, delimiter: str) -> list[dict[str, str]] | None:
    """The rows of a small table, None if it is missing, unreadable or has no split column."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if "split" not in (reader.fieldnames or []):
        return None
    return rows


def split_counts(rows: list[dict[str, str]]) -> dict[str, int]:
    counts = Counter((r.get("split") or "").strip().lower() for r in rows)
    return {s: counts.get(s, 0) for s in SPLITS}


def labels_file(track_config: Mapping[str, Any], dataset: str, root: Path) -> Path | None:
    """The labels CSV the segment stage reads: the one rule wsi_labels writes from GDC
    manifests, the demo's, or the config's ``labels``."""
    entry = track_config["datasets"][dataset]
    converted = converted_labels(track_config, dataset)
    if converted:
        return root / converted
    if entry.get("demo"):
        return root / f"data/demo/wsi/{dataset}/labels.csv"
    return root / entry["labels"] if entry.get("labels") else None


def dataset_size(
    track_config: Mapping[str, Any], dataset: str, root: str | Path = "."
) -> DatasetSize:
    """Slides per split and tiles of one dataset, from the first source that has them."""
    root = Path(root)
    tiles_index = root / TILES.format(dataset=dataset)
    rows = _rows(tiles_index, "\t")
    if rows is not None:
        tiles = sum(int(v) for r in rows for k, v in r.items() if k.startswith("n_") and v)
        return DatasetSize(split_counts(rows), str(tiles_index), tiles, str(tiles_index))
    entry = track_config["datasets"][dataset]
    hint = entry.get("size_hint") or {}
    where = f"size_hint of wsi.datasets.{dataset}"
    slides: Mapping[str, int] | None = None
    source = f"no tiling index, labels CSV or {where}"
    labels = labels_file(track_config, dataset, root)
    rows = _rows(labels, ",") if labels is not None else None
    if rows is not None:
        slides, source = split_counts(rows), str(labels)
    elif hint.get("slides"):
        slides = {s: int(hint["slides"].get(s, 0)) for s in SPLITS}
        source = f"{where}, an estimate"
    per_slide = hint.get("tiles_per_slide")
    if slides is None or per_slide is None:
        why = "slides unknown" if slides is None else f"tiles_per_slide not in {where}"
        return DatasetSize(slides, source, None, f"tiles unknown before tiling ({why})")
    tiles = round(sum(slides.values()) * float(per_slide))
    tiles_source = (
        f"{sum(slides.values())} slides ({source}) x {per_slide:g} tiles ({where}, an estimate)"
    )
    return DatasetSize(slides, source, tiles, tiles_source)


def schedules(
    config: Mapping[str, Any],
    site: Mapping[str, Any] | None = None,
    root: str | Path = ".",
    sizes: dict[str, DatasetSize] | None = None,
) -> list[Schedule]:
    """Every run's schedule: one slide a step (batch 1 per process), the training split."""
    sizes = {} if sizes is None else sizes

    def size_of(track_config: Mapping[str, Any], dataset: str, _: Any) -> Size:
        if dataset not in sizes:
            sizes[dataset] = dataset_size(track_config, dataset, root)
        known = sizes[dataset]
        if known.slides is None:
            return Size(None, known.slides_source)
        return Size(known.slides["train"], f"train slides: {known.slides_source}")

    def one_slide(track_config: Mapping[str, Any], settings: Mapping[str, Any]) -> list:
        return [("train", {**settings, "batch_size": 1})]

    return list(track_schedules(config, "wsi", size_of, site, phases=one_slide))


def capacity_jobs(
    config: Mapping[str, Any], site: Mapping[str, Any] | None = None, root: str | Path = "."
) -> list[Job]:
    """Per dataset the feature job (not for released mil4wsi graphs), then per run the
    training job, which waits for it."""
    track_config = config["wsi"]
    sizes: dict[str, DatasetSize] = {}
    plans = {(s.dataset, s.experiment): s for s in schedules(config, site, root, sizes)}
    jobs, features = [], {}
    for dataset in enabled_datasets("wsi", track_config):
        if track_config["datasets"][dataset].get("mil4wsi"):
            continue
        size = sizes.get(dataset) or dataset_size(track_config, dataset, root)
        job = Job(
            "wsi",
            "wsi_features",
            dataset,
            None,
            None,
            "GPU_1",
            "wsi_features",
            features_settings(track_config, dataset),
            size.tiles,
            "samples",
            size.tiles_source,
            resumable=True,  # finished slides are kept (prepare.features_dataset)
        )
        jobs.append(job)
        features[dataset] = job.id
    for run in runs(config, "wsi"):
        after = tuple(features[d] for d in [run.dataset] if d in features)
        jobs.append(
            training_job(plans[(run.dataset, run.experiment)], "wsi_train", run.seed, after=after)
        )
    return jobs
