"""Learning-rate schedules that fit the run: its total optimiser steps from the data, the
warm-up resolved to steps, and the check the rules run when the workflow is parsed.

A warm-up set in steps means something only against the run's length: 8,000 steps of warm-up
in a run of 7,680 steps never reach the peak, let alone decay. So a warm-up is given either in
steps (``warmup_steps``) or as a fraction of the run (``warmup_fraction``; when set, it wins),
and every run whose training size is known at parse time is checked before any job starts.

The total is what the trainer will take:
``min(max_epochs * steps_per_epoch, max_steps, ceil(max_samples / global_batch))``, where
``steps_per_epoch`` is ``ceil(train_samples / global_batch)`` (``floor`` for loaders that
drop the partial batch), the global batch is the per-device batch times the DDP processes,
and ``max_steps`` (optimiser steps) and ``max_samples`` (samples over all ranks) are optional
budgets of a track's ``train`` settings (absent or null: no limit); ``epoch_fraction`` (FLIP's
tuning) is a ``max_samples`` of that fraction of the training samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from workflow.common.config import ConfigError
from workflow.common.experiments import SERVES, enabled_datasets, run_settings
from workflow.common.resources import class_spec
from workflow.common.sites import ranks

log = logging.getLogger("lsai.schedule")


def steps_per_epoch(train_samples: int, global_batch: int, drop_last: bool = False) -> int:
    """Optimiser steps in one pass over ``train_samples`` (at least one)."""
    if global_batch < 1:
        raise ValueError(f"global batch must be positive, got {global_batch}")
    whole, rest = divmod(int(train_samples), int(global_batch))
    return max(whole + (1 if rest and not drop_last else 0), 1)


def total_steps(
    train_samples: int,
    global_batch: int,
    max_epochs: int,
    max_steps: int | None = None,
    max_samples: int | None = None,
    drop_last: bool = False,
) -> int:
    """The run's optimiser steps: its epochs, cut by the ``max_steps`` / ``max_samples``
    budgets where they are set."""
    limits = [int(max_epochs) * steps_per_epoch(train_samples, global_batch, drop_last)]
    if max_steps is not None:
        limits.append(int(max_steps))
    if max_samples is not None:
        limits.append(math.ceil(int(max_samples) / int(global_batch)))
    return max(min(limits), 1)


def warmup_steps(settings: Mapping[str, Any], total: int) -> int:
    """The warm-up in steps: ``warmup_fraction`` of ``total`` when set (rounded, at least
    one step), else ``warmup_steps``. Trainers call this with the trainer's own total
    (``trainer.estimated_stepping_batches``)."""
    fraction = settings.get("warmup_fraction")
    if fraction is not None:
        return max(round(float(fraction) * int(total)), 1)
    return max(int(settings["warmup_steps"]), 1)


def world_size(spec: Mapping[str, Any]) -> int:
    """DDP processes of a job of a class (``class_spec``): one per rank of a DDP class, else
    one (a ``GPU_1`` job, or any job on a CPU)."""
    return ranks(spec)


@dataclass(frozen=True)
class Size:
    """Training samples per epoch of one run, and where the number comes from (``samples``
    None: unknown, ``source`` says why)."""

    samples: int | None
    source: str


@dataclass(frozen=True)
class Schedule:
    """One training phase of one experiment on one dataset, as the trainer will run it."""

    track: str
    dataset: str
    experiment: str
    phase: str
    size: Size
    global_batch: int
    max_epochs: int
    settings: Mapping[str, Any]  # warmup_steps / warmup_fraction / max_steps / max_samples
    drop_last: bool = False

    @property
    def epochs(self) -> int:
        """``max_epochs``, raised to cover an ``epoch_fraction`` above 1."""
        fraction = self.settings.get("epoch_fraction")
        return max(self.max_epochs, math.ceil(float(fraction))) if fraction else self.max_epochs

    @property
    def budget_samples(self) -> int | None:
        """``max_samples``, or ``epoch_fraction`` of the training samples (FLIP's tuning:
        0.32 of an epoch), whichever is smaller."""
        limits = [self.settings.get("max_samples")]
        fraction = self.settings.get("epoch_fraction")
        if fraction and self.size.samples is not None:
            limits.append(max(math.ceil(float(fraction) * self.size.samples), 1))
        known = [int(v) for v in limits if v is not None]
        return min(known) if known else None

    @property
    def total(self) -> int | None:
        if self.size.samples is None:
            return None
        return total_steps(
            self.size.samples,
            self.global_batch,
            self.epochs,
            self.settings.get("max_steps"),
            self.budget_samples,
            self.drop_last,
        )

    @property
    def samples_seen(self) -> int | None:
        """Samples the optimiser steps over in the whole run (what the capacity plan times)."""
        total = self.total
        if total is None:
            return None
        return min(total * self.global_batch, self.epochs * int(self.size.samples or 0))

    @property
    def warmup(self) -> int | None:
        total = self.total
        return None if total is None else warmup_steps(self.settings, total)

    def describe(self) -> str:
        phase = "" if self.phase == "train" else f" ({self.phase})"
        return f"{self.track}: dataset {self.dataset!r}, experiment {self.experiment!r}{phase}"


def check_schedules(schedules: Iterable[Schedule]) -> list[str]:
    """Raise ``ConfigError`` for every schedule whose warm-up is not shorter than its run
    (all of them in one message); return one line per dataset whose size is unknown, saying
    why its runs were not checked."""
    problems, unknown = [], {}
    for s in schedules:
        if s.settings.get("schedule") == "constant":  # no warm-up to fit in the run
            continue
        total, warmup = s.total, s.warmup
        if total is None:
            unknown.setdefault((s.track, s.dataset), s.size.source)
            continue
        if warmup >= total:
            given = (
                f"warmup_fraction {s.settings['warmup_fraction']} = {warmup} steps"
                if s.settings.get("warmup_fraction") is not None
                else f"warmup_steps {warmup}"
            )
            problems.append(
                f"{s.describe()}: {given} is not shorter than the run's {total} optimiser "
                f"steps ({s.size.samples} training samples, {s.size.source}; global batch "
                f"{s.global_batch}, {s.max_epochs} epochs): the learning rate would never "
                "decay. Set a smaller warmup_steps or a warmup_fraction (e.g. 0.05)"
            )
    if problems:
        raise ConfigError("\n  ".join(["learning-rate warm-up longer than the run:", *problems]))
    return [
        f"{track}: schedules of dataset {dataset!r} not checked: training size unknown ({why})"
        for (track, dataset), why in unknown.items()
    ]


SizeOf = Callable[[Mapping[str, Any], str, Mapping[str, Any]], Size]
Phases = Callable[[Mapping[str, Any], Mapping[str, Any]], list[tuple[str, dict[str, Any]]]]


def one_phase(track_config: Mapping[str, Any], settings: Mapping[str, Any]) -> list:
    """The phases of a track that trains once per run: its settings as they are."""
    return [("train", dict(settings))]


def track_schedules(
    config: Mapping[str, Any],
    track: str,
    size_of: SizeOf,
    site: Mapping[str, Any] | None = None,
    phases: Phases = one_phase,
    drop_last: bool = False,
) -> Iterator[Schedule]:
    """Every (enabled dataset x experiment x phase) of a track as a schedule. Disabled
    experiments too: their outputs can still be named as targets. ``size_of(track_config,
    dataset, settings)`` gives the training size; ``site`` the resource map (DDP width)."""
    track_config = config[track]
    serves = SERVES.get(track, lambda dataset, settings: True)
    for dataset in enabled_datasets(track, track_config):
        for experiment in track_config["experiments"]:
            settings = run_settings(track_config, experiment)
            if not serves(track_config["datasets"][dataset], settings):
                continue
            for phase, phase_settings in phases(track_config, settings):
                spec = class_spec(phase_settings.get("resources", "GPU_1"), site)
                yield Schedule(
                    track,
                    dataset,
                    experiment,
                    phase,
                    size_of(track_config, dataset, phase_settings),
                    int(phase_settings["batch_size"]) * world_size(spec),
                    int(phase_settings["max_epochs"]),
                    phase_settings,
                    drop_last,
                )


def report_unchecked(lines: Iterable[str], stream: Any) -> None:
    """The check's log lines, one per line (the rules print them on stderr)."""
    for line in lines:
        print(f"note: {line}", file=stream)
