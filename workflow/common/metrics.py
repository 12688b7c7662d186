"""``metrics.json``: the one result file every run writes and the report reads.

Schema (version 1)::

    {"schema": 1, "track", "dataset", "experiment", "seed",
     "metrics": {name: float}, "higher_is_better": {name: bool or null (not ranked)},
     "config_hash", "git_commit", "variants": {setting: {"spec", "file", "sha256"}},
     "packages": {name: version}, "device",
     "world_size", "wall_time_s", "extra": {...}}
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflow.common.atomic import atomic_path, write_json
from workflow.common.config import config_hash
from workflow.common.errors import InputError
from workflow.common.provenance import device_description, git_commit, package_versions
from workflow.common.variants import variants_of

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1


@dataclass
class RunMetrics:
    track: str
    dataset: str
    experiment: str
    seed: int
    metrics: dict[str, float]
    higher_is_better: dict[str, bool | None]  # None: reported, not ranked
    config_hash: str
    git_commit: str = field(default_factory=git_commit)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)  # plug-ins it ran
    packages: dict[str, str] = field(default_factory=package_versions)
    device: str = field(default_factory=device_description)
    world_size: int = 1
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        missing = set(self.metrics) - set(self.higher_is_better)
        if missing:
            raise ValueError(f"no higher_is_better entry for metrics {sorted(missing)}")


@dataclass
class RunEvaluation:
    """One run's evaluation stage: who the run is, where its records go and when the stage
    started; :meth:`publish` writes them. Every track's ``evaluate`` ends in it."""

    track: str
    dataset: str
    experiment: str
    seed: int
    settings: Mapping[str, Any]
    metrics_path: Path
    predictions_path: Path | None = None
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def from_args(cls, track: str, args: Any) -> RunEvaluation:
        """From a stage's ``--dataset --experiment --seed --settings --metrics
        [--predictions]`` (the clock starts now)."""
        return cls(
            track, args.dataset, args.experiment, args.seed, args.settings, Path(args.metrics),
            getattr(args, "predictions", None),
        )  # fmt: skip

    def record(
        self,
        metrics: dict[str, float],
        higher_is_better: Mapping[str, bool | None],
        run_info: Mapping[str, Any],
        **extra: Any,
    ) -> RunMetrics:
        """The run's metrics, the settings' hash, and how it trained (``run_info`` of the
        published checkpoint; wall time = training + this evaluation so far)."""
        return RunMetrics(
            track=self.track,
            dataset=self.dataset,
            experiment=self.experiment,
            seed=self.seed,
            metrics=metrics,
            higher_is_better={k: higher_is_better[k] for k in metrics},
            config_hash=config_hash(self.settings),
            variants={
                key: v.provenance() for key, v in variants_of(self.track, self.settings).items()
            },
            world_size=int(run_info.get("world_size", 1)),
            wall_time_s=round(
                float(run_info.get("train_wall_time_s", 0.0)) + time.monotonic() - self.started, 2
            ),
            extra={
                **extra,
                "settings": dict(self.settings),
                "resumed_from_epoch": run_info.get("resumed_from_epoch"),
            },
        )

    def publish(
        self,
        metrics: dict[str, float],
        higher_is_better: Mapping[str, bool | None],
        run_info: Mapping[str, Any],
        predictions: pd.DataFrame | None = None,
        **extra: Any,
    ) -> RunMetrics:
        """Write ``predictions`` (Parquet) and then ``metrics.json``, each atomically: a
        ``metrics.json`` always has its predictions beside it."""
        if predictions is not None:
            if self.predictions_path is None:
                raise ValueError("predictions given but no predictions path")
            with atomic_path(self.predictions_path) as tmp:
                predictions.to_parquet(tmp, index=False)
        run = self.record(metrics, higher_is_better, run_info, **extra)
        write_metrics(self.metrics_path, run)
        return run


def write_metrics(path: str | Path, run: RunMetrics) -> None:
    record = asdict(run)
    # JSON has no NaN: an undefined metric (an empty bin) is written as null.
    record["metrics"] = {
        k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
        for k, v in run.metrics.items()
    }
    write_json(path, record)


_REQUIRED = ("schema", "track", "dataset", "experiment", "seed", "metrics", "higher_is_better")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read and check one metrics file; problems become ``InputError``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except json.JSONDecodeError as err:
        raise InputError(path, f"malformed JSON: {err}") from None
    if not isinstance(record, Mapping):
        raise InputError(path, "expected a JSON object")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise InputError(path, f"missing keys: {', '.join(missing)}")
    if record["schema"] != SCHEMA_VERSION:
        raise InputError(path, f"schema version {record['schema']}, expected {SCHEMA_VERSION}")
    return dict(record)


def read_predictions(path: str | Path) -> Any:
    """One run's ``predictions.parquet``; an unreadable file is an input error."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise InputError(path, f"not a readable Parquet table: {err}") from None


def predictions_by_experiment(
    paths: Sequence[str | Path], run_column: str | None = None
) -> dict[str, Any]:
    """Runs' ``predictions.parquet`` files, seeds pooled per experiment (the folder two up:
    ``.../<experiment>/seed<k>/predictions.parquet``), for a track's figures. With
    ``run_column`` each row also names its run (``seed<k>``), so a figure can give per-run
    metrics as the summary does."""
    import pandas as pd

    frames: dict[str, list[pd.DataFrame]] = {}
    for path in paths:
        frame = read_predictions(path)
        if run_column:
            frame[run_column] = Path(path).parent.name
        frames.setdefault(Path(path).parent.parent.name, []).append(frame)
    return {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items()}
