"""Where a WSI dataset's inputs come from, for the rules: the config names one of three
sources (slides + labels CSV, slides + GDC manifests, released mil4wsi graphs) or the demo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow.common.config import ConfigError


def mil4wsi_datasets(track_config: Mapping[str, Any]) -> list[str]:
    """Datasets given as released mil4wsi graphs (they skip segment -> ... -> graph)."""
    return [
        name
        for name, entry in track_config["datasets"].items()
        if entry.get("mil4wsi") and not entry.get("demo")
    ]


def converted_labels(track_config: Mapping[str, Any], dataset: str) -> str | None:
    """The labels CSV rule wsi_labels writes from GDC manifests, None when the config gives
    the CSV (or the demo writes it)."""
    entry = track_config["datasets"][dataset]
    if entry.get("manifests") and not entry.get("demo"):
        return f"results/wsi/{dataset}/labels/labels.csv"
    return None


def manifest_args(entry: Mapping[str, Any]) -> list[str]:
    """``--manifest CLASS TSV`` per class, as arguments (the rule quotes each with ``:q``)."""
    return [arg for name, path in entry["manifests"].items() for arg in ("--manifest", name, path)]


def check_encoder(track_config: Mapping[str, Any]) -> None:
    """The features stage's encoder is a timm model name: checked when the workflow is parsed
    (a typo would otherwise pass the dry-run and fail in the features job)."""
    import difflib

    import timm

    name = track_config["features"]["encoder"]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ConfigError(f"wsi.features.encoder: {name!r} is not a timm model{hint}")
