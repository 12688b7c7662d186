"""Training genes of a sequence run, known when the workflow is parsed: for the schedule check
(workflow/common/schedule.py) and the capacity plan (workflow/common/capacity.py, which
also gets the track's GPU jobs from here).

In order: a demo dataset's from its settings (deterministic: the encoder keeps every demo
gene); an encoded dataset's from its HDF5 files (the target vectors only, a few kB); a
published Xpresso folder's likewise; else the dataset's ``train_samples`` hint; else unknown.
Kept free of torch and Lightning: the rules import it at parse time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from workflow.common.capacity import Job, training_job
from workflow.common.experiments import runs
from workflow.common.schedule import Schedule, Size, track_schedules
from workflow.sequence.layout import SPLITS

#: The encode rule's output folder (rules/sequence.smk ``ENCODED``).
ENCODED = "results/sequence/{dataset}/prep/encoded"
#: workflow/sequence/data.py ``CV_VAL_FRACTION`` (a test keeps them equal; importing data.py
#: would load Lightning at parse time).
CV_VAL_FRACTION = 0.1


def fold_train(pool: int, folds: int) -> int:
    """Training genes of the smallest fold run over ``pool`` genes (data.fold_indices: the
    held-out part is one of ``folds``, the largest first; ``CV_VAL_FRACTION`` of the rest
    validates)."""
    rest = pool - math.ceil(pool / folds)
    return max(rest - max(1, round(CV_VAL_FRACTION * rest)), 0)


def _target_counts(path: Path) -> dict[str, int]:
    """Genes per task in one split file: those with a finite target."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as h5:
        mrna = int(np.isfinite(h5["label"][()]).sum()) if "label" in h5 else 0
        protein = int(np.isfinite(h5["protein_label"][()]).sum()) if "protein_label" in h5 else 0
    return {"mrna": mrna, "protein": protein, "joint": protein}


def from_files(folder: Path, task: str, folds: int | None) -> Size | None:
    """Exact counts from a folder of split files, None if the files it needs are missing."""
    needed = list(SPLITS.values()) if folds else [SPLITS["train"]]
    if not all((folder / name).is_file() for name in needed):
        return None
    try:
        counts = {name: _target_counts(folder / name)[task] for name in needed}
    except (OSError, KeyError) as err:
        return Size(None, f"{folder}: unreadable split files ({err})")
    if folds:
        return Size(fold_train(sum(counts.values()), folds), f"{folder}, fold run")
    return Size(counts[SPLITS["train"]], f"{folder / SPLITS['train']}")


def from_demo(track_config: Mapping[str, Any], task: str, folds: int | None) -> Size:
    """The demo's genes: all encoded, ``val_genes`` + ``test_genes`` drawn out; a protein
    for ``protein_fraction`` of them (drawn per gene: the expected count)."""
    demo, encode = track_config.get("demo", {}), track_config.get("encode", {})
    genes = int(demo.get("genes", 3000))
    share = 1.0 if task == "mrna" else float(demo.get("protein_fraction", 0.9))
    if folds:
        return Size(fold_train(round(share * genes), folds), "demo settings, fold run")
    train = genes - int(encode.get("val_genes", 1000)) - int(encode.get("test_genes", 1000))
    return Size(round(share * train), "demo settings")


def from_hint(
    track_config: Mapping[str, Any], entry: Mapping[str, Any], task: str, folds: int | None
) -> Size | None:
    """The dataset's ``train_samples``: training genes of the train split, one number (every
    task) or per task. A k-fold run pools all splits: the hint plus the val and test genes
    (an upper bound for the protein tasks, whose val / test genes are fewer)."""
    hint = entry.get("train_samples")
    if isinstance(hint, Mapping):
        hint = hint.get(task)
    if hint is None:
        return None
    if folds:
        encode = track_config.get("encode", {})
        pool = int(hint) + int(encode.get("val_genes", 1000)) + int(encode.get("test_genes", 1000))
        return Size(fold_train(pool, folds), "train_samples hint, fold run")
    return Size(int(hint), "train_samples hint")


def train_size(
    track_config: Mapping[str, Any],
    dataset: str,
    settings: Mapping[str, Any],
    root: str | Path = ".",
) -> Size:
    """Training genes per epoch of a run with ``settings`` on ``dataset``."""
    entry = track_config["datasets"][dataset]
    task, folds = settings.get("task", "mrna"), settings.get("folds") or None
    if entry.get("demo"):
        return from_demo(track_config, task, folds)
    folders = [Path(root) / ENCODED.format(dataset=dataset)]
    if entry.get("xpresso"):
        folders.append(Path(entry["xpresso"]))
    for folder in folders:
        size = from_files(folder, task, folds)
        if size is not None:
            return size
    hinted = from_hint(track_config, entry, task, folds)
    if hinted is not None:
        return hinted
    return Size(
        None,
        f"no encoded files in {folders[0]}"
        + (f" or {folders[1]}" if len(folders) > 1 else "")
        + f" and no train_samples hint in sequence.datasets.{dataset}",
    )


def schedules(
    config: Mapping[str, Any], site: Mapping[str, Any] | None = None, root: str | Path = "."
) -> list[Schedule]:
    """Every sequence run's schedule (one training phase; the loader keeps the last partial
    batch)."""
    return list(
        track_schedules(config, "sequence", lambda tc, ds, s: train_size(tc, ds, s, root), site)
    )


def capacity_jobs(
    config: Mapping[str, Any], site: Mapping[str, Any] | None = None, root: str | Path = "."
) -> list[Job]:
    """The training job of every run: the samples its optimiser steps over (``trials``
    initialisations one after the other: that many times one run's)."""
    plans = {(s.dataset, s.experiment): s for s in schedules(config, site, root)}
    jobs = []
    for run in runs(config, "sequence"):
        job = training_job(plans[(run.dataset, run.experiment)], "sequence_train", run.seed)
        trials = int(job.settings.get("trials") or 1)
        if trials > 1 and job.work is not None:
            job = replace(job, work=job.work * trials)
        jobs.append(job)
    return jobs
