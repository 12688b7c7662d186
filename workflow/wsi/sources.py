"""Where a WSI dataset's inputs come from, for the rules: the config names one of three
sources (slides + labels CSV, slides + GDC manifests, released mil4wsi graphs) or the demo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow.common.config import ConfigError, schema_defaults


def mil4wsi_datasets(track_config: Mapping[str, Any]) -> list[str]:
    """Datasets given as released mil4wsi graphs (they skip segment -> ... -> graph)."""
    return [
        name
        for name, entry in track_config["datasets"].items()
        if entry.get("mil4wsi") and not entry.get("demo")
    ]


def converted_labels(track_config: Mapping[str, Any], dataset: str) -> str | None:
    """The labels CSV rule wsi_labels writes from GDC manifests (rule wsi_camelyon16 from a
    Camelyon16 root), None when the config gives the CSV (or the demo writes it)."""
    entry = track_config["datasets"][dataset]
    if (entry.get("manifests") or entry.get("camelyon16")) and not entry.get("demo"):
        return f"results/wsi/{dataset}/labels/labels.csv"
    return None


def camelyon16_datasets(track_config: Mapping[str, Any]) -> list[str]:
    """Datasets given as a Camelyon16 root (rule wsi_camelyon16 writes their labels)."""
    return [
        name
        for name, entry in track_config["datasets"].items()
        if entry.get("camelyon16") and not entry.get("demo") and not entry.get("mil4wsi")
    ]


def slides_folder(track_config: Mapping[str, Any], dataset: str) -> str | None:
    """The slides folder of a Camelyon16 root (the labels' ``path`` column is relative to
    it), None for other datasets (their ``slides``)."""
    entry = track_config["datasets"][dataset]
    return None if entry.get("demo") else entry.get("camelyon16")


def lesion_folders(track_config: Mapping[str, Any], dataset: str) -> list[str]:
    """Where a dataset's lesion annotations are (ASAP XML per tumour slide): the demo's
    ``lesions`` folder, a Camelyon16 root's two, or the ``lesions`` key; none for released
    mil4wsi graphs (no level-0 coordinates to match them with)."""
    from workflow.wsi.camelyon16 import annotation_folders

    entry = track_config["datasets"][dataset]
    if entry.get("demo"):
        return [f"data/demo/wsi/{dataset}/lesions"]
    if entry.get("mil4wsi"):
        return []
    folders = (
        [str(f) for f in annotation_folders(entry["camelyon16"])] if entry.get("camelyon16") else []
    )
    return folders + ([entry["lesions"]] if entry.get("lesions") else [])


def lesions_index(track_config: Mapping[str, Any], dataset: str) -> str | None:
    """The lesions stage's index of a dataset with annotations, None without."""
    if lesion_folders(track_config, dataset):
        return f"results/wsi/{dataset}/prep/lesions/index.tsv"
    return None


def manifest_args(entry: Mapping[str, Any]) -> list[str]:
    """``--manifest CLASS TSV`` per class, as arguments (the rule quotes each with ``:q``)."""
    return [arg for name, path in entry["manifests"].items() for arg in ("--manifest", name, path)]


def magnification(key: Any) -> float:
    """A magnification as a config key gives it (5, 10.0, "20", "x20") -> a number."""
    try:
        value = float(str(key).strip().lower().removeprefix("x"))
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"wsi.features.weights: {key!r} is not a magnification (e.g. 20 or x20)")
    return value


def scale_weights(weights: Mapping[Any, str]) -> dict[float, str]:
    """Per-scale weights keyed by magnification, however the config spelled the keys."""
    found: dict[float, str] = {}
    for key, path in weights.items():
        mag = magnification(key)
        if mag in found:
            raise ConfigError(f"wsi.features.weights: magnification {mag:g} given twice")
        found[mag] = path
    return found


def features_settings(track_config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The features stage's settings on ``dataset``: the track's ``features`` with the dataset's
    own ``features`` keys over them (a whole ``weights`` mapping replaces the track's: the
    reference trains its encoders per dataset), per-scale keys spelled as numbers ("20")."""
    own = track_config["datasets"][dataset].get("features") or {}
    settings = {**track_config["features"], **own}
    if isinstance(settings.get("weights"), Mapping):
        settings["weights"] = {f"{m:g}": p for m, p in scale_weights(settings["weights"]).items()}
    return settings


def check_encoder(track_config: Mapping[str, Any]) -> None:
    """The features stage's encoder is a timm model name and per-scale weights name every
    tiled magnification: checked when the workflow is parsed, for the track and each enabled
    dataset (a typo would otherwise pass the dry-run and fail in the features job; whether
    the files exist is the job's to find)."""
    checks = {"wsi.features": dict(track_config["features"])}
    for name, entry in (track_config.get("datasets") or {}).items():
        if entry.get("features") and entry.get("enabled", True) and not entry.get("mil4wsi"):
            checks[f"wsi.datasets.{name}.features"] = features_settings(track_config, name)
    tiled = (track_config.get("tile") or {}).get("magnifications")
    if tiled is None:
        tiled = schema_defaults("wsi_tile")["magnifications"]
    for where, settings in checks.items():
        _check_name(where, settings["encoder"])
        weights = settings.get("weights")
        if isinstance(weights, Mapping):
            have = scale_weights(weights)
            if missing := [f"{float(m):g}" for m in tiled if float(m) not in have]:
                raise ConfigError(
                    f"{where}.weights: no weights for magnification {', '.join(missing)} "
                    f"(wsi.tile.magnifications: {list(tiled)}; one file per tiled scale)"
                )


def _check_name(where: str, name: str) -> None:
    import difflib

    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ConfigError(f"{where}.encoder: {name!r} is not a timm model{hint}")
