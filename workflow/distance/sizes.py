"""Training sizes of the distance networks, known before training, and the track's GPU jobs
for the capacity plan (workflow/common/capacity.py).

DisNet steps over objects (one box a sample), Zhu & Fang over frames (one frame with all its
boxes a sample). In order: the index stage's train table (exact: its rows and distinct
frames; extract drops only damaged frames); a demo dataset's expected counts from its
settings; the dataset's ``size_hint`` (sequences, frames per sequence, objects per frame)
through the ``index`` section's split and frame stride; else unknown. The reference
predictors (mean, pinhole) and the evaluation run on the CPU: no GPU job.
Kept free of torch and pandas at import time: the workflow imports it when parsed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow.common.capacity import Job, training_job
from workflow.common.experiments import runs
from workflow.common.schedule import Schedule, Size, track_schedules
from workflow.common.variants import is_variant

#: The index rule's train table (rules/distance.smk ``distance_index``).
INDEX = "results/distance/{dataset}/prep/index/train.parquet"
#: Fitted on the CPU (rules/distance.smk ``REFERENCE_MODELS``).
REFERENCES = ("mean", "pinhole")


def split_counts(sequences: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Sequences per split of a seeded fraction split (workflow/distance/index.py
    ``assign_splits``, which a test keeps equal: val and test rounded, at least one each when
    there are three sequences, the rest train)."""
    total = sum(float(fractions[s]) for s in ("train", "val", "test"))
    counts = {s: int(round(sequences * float(fractions[s]) / total)) for s in ("val", "test")}
    for s in ("val", "test"):
        if float(fractions[s]) > 0 and counts[s] == 0 and sequences >= 3:
            counts[s] = 1
    return {"train": sequences - counts["val"] - counts["test"], **counts}


def train_sequences(index: Mapping[str, Any], sequences: int) -> int:
    """Training sequences: the explicit list when given, else the fraction split's."""
    explicit = index.get("split_sequences")
    if explicit:
        return len(explicit["train"])
    return split_counts(sequences, index["split_fractions"])["train"]


def counted(path: Path) -> tuple[int, int] | None:
    """(objects, frames) of an index table, None if it is missing or unreadable."""
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["sequence", "frame"])
    except Exception:  # pyarrow raises several types for damaged files
        return None
    frames = table.group_by(["sequence", "frame"]).aggregate([]).num_rows
    return table.num_rows, frames


def expected(
    track_config: Mapping[str, Any], entry: Mapping[str, Any], dataset: str
) -> tuple[float, float, str] | None:
    """(objects, frames, source) of the train split from the demo's settings or the size
    hint; None when the dataset has neither."""
    index = track_config["index"]
    stride = int(index["frame_stride"]["train"])
    if entry.get("demo"):
        demo = track_config.get("demo", {})
        sequences, length = int(demo.get("sequences", 24)), int(demo.get("frames_per_sequence", 10))
        kept = math.ceil(length / stride)  # the demo numbers frames from 0 (demo.py)
        people = demo.get("pedestrians", [4, 8])
        per_frame = (float(people[0]) + float(people[1])) / 2  # demo.py refills the view
        source = "demo settings, expected"
    elif entry.get("size_hint"):
        hint = entry["size_hint"]
        sequences, length = int(hint["sequences"]), int(hint["frames_per_sequence"])
        kept = length // stride  # from frame 1; from 0 would keep one more a sequence at most
        per_frame = float(hint["objects_per_frame"])
        source = (
            f"size_hint of distance.datasets.{dataset} ({per_frame:g} objects a frame, an estimate)"
        )
    else:
        return None
    frames = train_sequences(index, sequences) * kept
    return frames * per_frame, float(frames), source


def train_size(
    track_config: Mapping[str, Any],
    dataset: str,
    settings: Mapping[str, Any],
    root: str | Path = ".",
    cache: dict[Path, tuple[int, int] | None] | None = None,
) -> Size:
    """Training samples per epoch of a run: objects (DisNet) or frames (Zhu & Fang).
    ``cache`` keeps each index table's counts for the next experiment of the dataset."""
    per_frame = settings.get("model") == "zhu"
    if is_variant(settings.get("model")):
        from workflow.distance.models import reads_frames  # torch: only for a plug-in

        per_frame = reads_frames(settings["model"])
    path = Path(root) / INDEX.format(dataset=dataset)
    cache = {} if cache is None else cache
    if path not in cache:
        cache[path] = counted(path)
    exact = cache[path]
    if exact is not None:
        return Size(exact[1] if per_frame else exact[0], str(path))
    entry = track_config["datasets"][dataset]
    guess = expected(track_config, entry, dataset)
    if guess is not None:
        objects, frames, source = guess
        return Size(round(frames if per_frame else objects), source)
    return Size(None, f"no index table {path} and no size_hint in distance.datasets.{dataset}")


def schedules(
    config: Mapping[str, Any], site: Mapping[str, Any] | None = None, root: str | Path = "."
) -> list[Schedule]:
    """Every network run's schedule (one training phase; the loader keeps the last partial
    batch). The reference predictors are left out: they do not train."""
    cache: dict[Path, tuple[int, int] | None] = {}
    return [
        s
        for s in track_schedules(
            config, "distance", lambda tc, ds, s: train_size(tc, ds, s, root, cache), site
        )
        if s.settings.get("model") not in REFERENCES
    ]


def capacity_jobs(
    config: Mapping[str, Any], site: Mapping[str, Any] | None = None, root: str | Path = "."
) -> list[Job]:
    """The training job of every network run: the samples its optimiser steps over. Its
    settings carry the stored frame size, which Zhu & Fang's cost depends on."""
    plans = {(s.dataset, s.experiment): s for s in schedules(config, site, root)}
    frame_size = list(config["distance"]["extract"]["frame_size"])
    jobs = []
    for run in runs(config, "distance"):
        s = plans.get((run.dataset, run.experiment))
        if s is None:  # a reference predictor
            continue
        settings = {**s.settings, "frame_size": frame_size}
        jobs.append(training_job(s, "distance_train", run.seed, settings=settings))
    return jobs
