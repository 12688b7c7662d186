"""Where a FLIP dataset's inputs come from, for the rules: its input shards in filter groups
(the demo's from its settings, a real dataset's from its brace pattern) and its val folder;
and the config check the rules run when the workflow is parsed (``check_models``)."""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow.common.config import ConfigError, experiment_settings
from workflow.flip.filter_checks import DEFAULTS
from workflow.flip.layout import expand_shards, shard_groups, shard_stem

log = logging.getLogger("lsai.flip.sources")

#: The project's own open_clip configs (workflow/flip/model.py registers them with open_clip).
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
FILTERED = "results/flip/{dataset}/filtered/group{group}"
HASHES = "results/flip/{dataset}/dedup/group{group}.parquet"
#: One table per dedup bucket, in one folder: read together they are one parquet dataset.
DUPLICATES = "results/flip/{dataset}/dedup/duplicates.parquet/bucket{bucket}.parquet"


def input_groups(track_config: Mapping[str, Any], dataset: str) -> list[list[str]]:
    """The dataset's input shards in consecutive groups of ``filter.shards_per_group``: one
    filter job each, known before any job runs, so a dry-run shows them all."""
    entry = track_config["datasets"][dataset]
    if entry.get("demo"):
        root = f"data/demo/flip/{dataset}/shards"
        shards = [f"{root}/{shard_stem(i)}.tar" for i in range(track_config["demo"]["shards"])]
    else:
        shards = expand_shards(entry["shards"])
    per_group = track_config["filter"].get("shards_per_group", DEFAULTS["shards_per_group"])
    return shard_groups(shards, int(per_group))


def hash_tables(track_config: Mapping[str, Any], dataset: str) -> list[str]:
    """The hash jobs' tables, in group order (the dedup job's input)."""
    n = len(input_groups(track_config, dataset))
    return [HASHES.format(dataset=dataset, group=g) for g in range(n)]


def duplicate_tables(track_config: Mapping[str, Any], dataset: str) -> list[str]:
    """The dedup jobs' tables, one per bucket (each filter job's input)."""
    n = int(track_config["filter"].get("dedup_buckets", DEFAULTS["dedup_buckets"]))
    return [DUPLICATES.format(dataset=dataset, bucket=b) for b in range(n)]


def dataset_profile(track_config: Mapping[str, Any], dataset: str) -> str:
    """The dataset's filter profile (workflow/flip/filter_checks.py PROFILES)."""
    return track_config["datasets"][dataset].get("profile", "laion400m")


def filtered_folders(track_config: Mapping[str, Any], dataset: str) -> list[str]:
    """The filter jobs' output folders, in shard order."""
    n = len(input_groups(track_config, dataset))
    return [FILTERED.format(dataset=dataset, group=g) for g in range(n)]


def val_folder(track_config: Mapping[str, Any], dataset: str) -> str:
    """The folder with ``val/<class>/*.jpg`` and ``classnames.txt``."""
    entry = track_config["datasets"][dataset]
    return f"data/demo/flip/{dataset}" if entry.get("demo") else entry["val"]


def check_models(track_config: Mapping[str, Any]) -> None:
    """Every experiment's ``model`` is one open_clip can build: caught when the workflow is
    parsed, not in a training job after hours of filtering. open_clip (seconds to import)
    is asked only when some model is not one of the project's own configs, once per parse."""
    own = {p.stem for p in MODEL_CONFIGS.glob("*.json")}
    asked = {}
    for experiment in track_config["experiments"]:
        model = experiment_settings(track_config, experiment).get("model")
        if model is not None and not (isinstance(model, str) and model in own):
            asked[experiment] = model
    if not asked:
        return  # unset: model.py's default, one of the project's own
    known = known_models()
    if known is None:
        return
    for experiment, model in asked.items():
        if model not in known:
            raise ConfigError(
                f"flip: experiment {experiment!r} names model {model!r}, which open_clip does "
                f"not know (known names include {', '.join(suggestions(model, known))}; "
                f"{len(known)} in all: open_clip.list_models() and workflow/flip/model_configs)"
            )


@functools.cache
def known_models() -> tuple[str, ...] | None:
    """open_clip's model names with the project's own (registered by importing
    workflow/flip/model.py); None, with a warning, where open_clip is not installed (a
    Snakemake that runs each rule in its conda environment)."""
    try:
        import open_clip

        from workflow.flip import model  # noqa: F401  registers the project's configs
    except ImportError as err:
        log.warning("flip model names not checked: %s", err)
        return None
    return tuple(open_clip.list_models())


def suggestions(model: object, known: tuple[str, ...], n: int = 5) -> list[str]:
    """The known names closest to ``model``, else the first few (the project's first)."""
    close = difflib.get_close_matches(str(model), known, n=n, cutoff=0.6)
    own = sorted(p.stem for p in MODEL_CONFIGS.glob("*.json"))
    return close or [*own, *(k for k in known if k not in own)][:n]
