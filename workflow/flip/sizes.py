"""Training samples of a FLIP run, known when the workflow is parsed: for the schedule check
(workflow/common/schedule.py) and the capacity plan (workflow/common/capacity.py, which
also gets the track's GPU jobs from here).

Training reads the filter's output shards and holds the last one out for ``val_loss``. In
order: the filter's ``counts.json`` files when every group has one (exact); a demo dataset's
from its settings (the filter drops exactly the planted samples); the dataset's
``train_samples`` hint; else the input shards x img2dataset's 10,000 samples per shard, an
upper bound (failed downloads and filtered samples are not subtracted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow.common.capacity import Job, training_job
from workflow.common.experiments import runs
from workflow.common.schedule import Schedule, Size, track_schedules
from workflow.flip.filter_checks import DEFAULTS
from workflow.flip.layout import SAMPLES_PER_SHARD
from workflow.flip.sources import filtered_folders, input_groups

#: workflow/flip/train.py ``NOT_INHERITED``: pre-training's keys tuning never takes (a test
#: keeps them equal: importing train.py loads torch and open_clip at parse time).
NOT_INHERITED = (
    "lr", "base_lr", "max_epochs", "max_steps", "max_samples", "epoch_fraction",
    "warmup_steps", "warmup_fraction",
)  # fmt: skip
#: Drop reasons the demo plants ``bad_per_reason`` samples of (workflow/flip/demo.py
#: ``PLANTED``; a test keeps them equal: importing demo.py loads PIL at parse time).
PLANTED_REASONS = 10


def last_shard(kept: int, shard_size: int) -> int:
    """Samples in the last output shard of a filter group that kept ``kept``."""
    if kept <= 0:
        return 0
    return kept - (math.ceil(kept / shard_size) - 1) * shard_size


def from_counts(folders: list[Path], shard_size: int) -> Size | None:
    """Kept samples of every filter group minus the held-out last shard; None unless every
    group is finished (its ``counts.json`` is written last)."""
    files = [folder / "counts.json" for folder in folders]
    if not files or not all(f.is_file() for f in files):
        return None
    try:
        kept = [int(json.loads(f.read_text())["kept"]) for f in files]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return Size(None, f"unreadable filter counts ({err})")
    held_out = next((last_shard(k, shard_size) for k in reversed(kept) if k > 0), 0)
    return Size(sum(kept) - held_out, f"filter counts in {folders[0].parent}")


def from_demo(track_config: Mapping[str, Any], dataset: str, shard_size: int) -> Size:
    """The demo's samples less the planted bad ones, spread evenly over the filter groups."""
    demo = track_config.get("demo", {})
    per_shard = int(demo.get("samples_per_shard", 240))
    total = int(demo.get("shards", 5)) * per_shard
    kept = total - PLANTED_REASONS * int(demo.get("bad_per_reason", 2))
    last_group = len(input_groups(track_config, dataset)[-1]) * per_shard
    kept_last = round(kept * last_group / total)
    return Size(kept - last_shard(kept_last, shard_size), "demo settings")


def train_size(
    track_config: Mapping[str, Any],
    dataset: str,
    settings: Mapping[str, Any] | None = None,
    root: str | Path = ".",
) -> Size:
    """Training samples per epoch on ``dataset`` (the same for every experiment)."""
    entry = track_config["datasets"][dataset]
    shard_size = int(track_config.get("filter", {}).get("shard_size", DEFAULTS["shard_size"]))
    folders = [Path(root) / f for f in filtered_folders(track_config, dataset)]
    counted = from_counts(folders, shard_size)
    if counted is not None:
        return counted
    if entry.get("demo"):
        return from_demo(track_config, dataset, shard_size)
    if entry.get("train_samples") is not None:
        return Size(int(entry["train_samples"]), "train_samples hint")
    shards = sum(len(group) for group in input_groups(track_config, dataset))
    return Size(
        shards * SAMPLES_PER_SHARD - shard_size,
        f"{shards} input shards x {SAMPLES_PER_SHARD} samples, an upper bound",
    )


def phases(track_config: Mapping[str, Any], settings: Mapping[str, Any]) -> list:
    """Pre-training, then unmasked tuning: the experiment's model and data settings with the
    ``tune`` section's length and warm-up, none of pre-training's (workflow/flip/train.py
    ``tune_settings``; its lr does not matter here)."""
    tune = {k: v for k, v in track_config.get("tune", {}).items() if v is not None}
    kept = {k: v for k, v in settings.items() if k not in NOT_INHERITED}
    return [
        ("pretrain", dict(settings)),
        ("tune", {"max_epochs": 1, **kept, **tune, "mask_ratio": 0.0}),
    ]


def schedules(
    config: Mapping[str, Any], site: Mapping[str, Any] | None = None, root: str | Path = "."
) -> list[Schedule]:
    """Every FLIP run's two schedules; the loader drops the partial last batch."""
    sizes: dict[str, Size] = {}  # one count per dataset: counts.json files can be large

    def size_of(track_config: Mapping[str, Any], dataset: str, _: Any) -> Size:
        if dataset not in sizes:
            sizes[dataset] = train_size(track_config, dataset, None, root)
        return sizes[dataset]

    return list(track_schedules(config, "flip", size_of, site, phases=phases, drop_last=True))


def capacity_jobs(
    config: Mapping[str, Any], site: Mapping[str, Any] | None = None, root: str | Path = "."
) -> list[Job]:
    """Per run: pre-training, then tuning, then evaluation (one GPU, rule flip_evaluate)."""
    plans = {(s.dataset, s.experiment, s.phase): s for s in schedules(config, site, root)}
    jobs = []
    for run in runs(config, "flip"):
        ids = []
        for phase, rule in (("pretrain", "flip_pretrain"), ("tune", "flip_tune")):
            s = plans[(run.dataset, run.experiment, phase)]
            job = training_job(s, rule, run.seed, kind="flip_train", after=tuple(ids[-1:]))
            jobs.append(job)
            ids.append(job.id)
        jobs.append(
            Job(
                "flip",
                "flip_evaluate",
                run.dataset,
                run.experiment,
                run.seed,
                "GPU_1",
                "flip_evaluate",
                plans[(run.dataset, run.experiment, "tune")].settings,
                after=(ids[-1],),
            )
        )
    return jobs
