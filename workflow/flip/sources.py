"""Where a FLIP dataset's inputs come from, for the rules: its input shards in filter groups
(the demo's from its settings, a real dataset's from its brace pattern) and its val folder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow.flip.filter import DEFAULTS
from workflow.flip.layout import expand_shards, shard_groups, shard_stem

FILTERED = "results/flip/{dataset}/filtered/group{group}"
HASHES = "results/flip/{dataset}/dedup/group{group}.parquet"
DUPLICATES = "results/flip/{dataset}/dedup/duplicates.parquet"


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


def filtered_folders(track_config: Mapping[str, Any], dataset: str) -> list[str]:
    """The filter jobs' output folders, in shard order."""
    n = len(input_groups(track_config, dataset))
    return [FILTERED.format(dataset=dataset, group=g) for g in range(n)]


def val_folder(track_config: Mapping[str, Any], dataset: str) -> str:
    """The folder with ``val/<class>/*.jpg`` and ``classnames.txt``."""
    entry = track_config["datasets"][dataset]
    return f"data/demo/flip/{dataset}" if entry.get("demo") else entry["val"]
