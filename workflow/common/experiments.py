"""Expansion of a track's config into runs: enabled dataset x enabled experiment x seed.

Used by rules/common.smk to build target lists, and testable without Snakemake.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workflow.common.config import ConfigError, experiment_settings


@dataclass(frozen=True)
class Run:
    track: str
    dataset: str
    experiment: str
    seed: int

    @property
    def folder(self) -> str:
        return f"results/{self.track}/{self.dataset}/{self.experiment}/seed{self.seed}"


#: What a real (not demo) dataset must name, per track: one of these key sets (`root` unless
#: listed here).
DATASET_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "wsi": (
        ("slides", "labels"),
        ("slides", "manifests", "positive"),
        ("mil4wsi", "labels"),
        ("camelyon16",),
    ),
    "sequence": (("genome", "tss", "expression"), ("promoters", "expression"), ("xpresso",)),
    "flip": (("shards", "val"),),
    "watermark": (("documents",),),
}


def _spelled(keys: tuple[str, ...]) -> str:
    quoted = [f"`{k}`" for k in keys]
    return (
        " and ".join(quoted) if len(quoted) < 3 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    )


def enabled_datasets(track: str, track_config: Mapping[str, Any]) -> list[str]:
    names = []
    for name, dataset in track_config["datasets"].items():
        if not dataset.get("enabled", True):
            continue
        choices = DATASET_KEYS.get(track, (("root",),))
        if not dataset.get("demo") and not any(all(dataset.get(k) for k in c) for c in choices):
            needs = ", or ".join(_spelled(c) for c in choices)
            raise ConfigError(f"{track}.datasets.{name}: needs {needs} (or `demo: true`)")
        names.append(name)
    return names


def experiment_seeds(
    track_config: Mapping[str, Any], experiment: str, default: Sequence[int]
) -> list[int]:
    """The experiment's seeds; for a k-fold experiment (``folds``) the held-out folds,
    0..K-1 unless listed."""
    settings = experiment_settings(track_config, experiment)
    folds = settings.get("folds")
    if not folds:
        return list(settings.get("seeds") or default)
    seeds = list(settings.get("seeds") or range(folds))
    outside = [s for s in seeds if s >= folds]
    if outside:
        raise ConfigError(
            f"experiment {experiment!r}: seeds {outside} name no fold of its {folds} folds "
            f"(a k-fold experiment's seeds are its held-out folds, 0..{folds - 1})"
        )
    return seeds


def _xpresso_serves(dataset: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    return not dataset.get("xpresso") or settings.get("task", "mrna") == "mrna"


#: Which experiments a dataset can run, per track (all unless listed): the published Xpresso
#: files hold no proteins, so they serve only the mrna task.
SERVES: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], bool]] = {
    "sequence": _xpresso_serves,
}


def enabled_experiments(track_config: Mapping[str, Any]) -> list[str]:
    """Experiments that `all` and the report include: `enabled: false` keeps one in the config
    (a variant for the cluster, say) while leaving it out; its outputs can still be named."""
    return [
        name
        for name in track_config["experiments"]
        if experiment_settings(track_config, name).get("enabled", True)
    ]


def runs(config: Mapping[str, Any], track: str) -> list[Run]:
    track_config = config[track]
    serves = SERVES.get(track, lambda dataset, settings: True)
    return [
        Run(track, dataset, experiment, seed)
        for dataset in enabled_datasets(track, track_config)
        for experiment in enabled_experiments(track_config)
        if serves(track_config["datasets"][dataset], experiment_settings(track_config, experiment))
        for seed in experiment_seeds(track_config, experiment, config["seeds"])
    ]


def run_settings(track_config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """What a run is trained with: defaults + overrides, without the seed list or switch."""
    settings = experiment_settings(track_config, experiment)
    settings.pop("seeds", None)
    settings.pop("enabled", None)
    return settings


def experiment_pattern(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (none: a pattern that never matches),
    so rules that train different kinds of experiments never claim the same output."""
    names = sorted(names)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"
