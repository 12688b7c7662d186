"""``metrics.json``: the one result file every run writes and the report reads.

Schema (version 1)::

    {"schema": 1, "track", "dataset", "experiment", "seed",
     "metrics": {name: float}, "higher_is_better": {name: bool},
     "config_hash", "git_commit", "packages": {name: version}, "device",
     "world_size", "wall_time_s", "extra": {...}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workflow.common.atomic import write_json
from workflow.common.errors import InputError
from workflow.common.provenance import device_description, git_commit, package_versions

SCHEMA_VERSION = 1


@dataclass
class RunMetrics:
    track: str
    dataset: str
    experiment: str
    seed: int
    metrics: dict[str, float]
    higher_is_better: dict[str, bool]
    config_hash: str
    git_commit: str = field(default_factory=git_commit)
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
