"""Where the watermark rules' inputs come from: a dataset's documents and a model's folder
(the demo's trained by rule watermark_lm, a real one read from its path as it is)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from workflow.common.config import ConfigError, experiment_settings
from workflow.watermark.demo import DOCUMENTS

DEMO_MODEL = "data/demo/watermark/models/{model}"
PROMPTS = "results/watermark/{dataset}/prompts/{model}.jsonl"


def documents(track_config: Mapping[str, Any], dataset: str) -> list[str]:
    entry = track_config["datasets"][dataset]
    if entry.get("demo"):
        return [f"data/demo/watermark/{dataset}/{DOCUMENTS}"]
    return list(entry["documents"])


def check_models(track_config: Mapping[str, Any]) -> None:
    """Every experiment's model and the oracle name an entry of ``models`` that says where
    it is: caught before any job runs, not in a generate job hours later."""
    models = track_config["models"]
    for name, entry in models.items():
        if not entry.get("demo") and not entry.get("path"):
            raise ConfigError(f"watermark.models.{name}: needs `path` (or `demo: true`)")
    named = {f"experiment {e!r}": experiment_settings(track_config, e)["model"]
             for e in track_config["experiments"]}  # fmt: skip
    paraphraser = track_config.get("paraphrase", {}).get("model")
    for role, model in (("oracle", track_config.get("oracle")), ("paraphraser", paraphraser)):
        if model:
            named[role] = model
    for who, model in named.items():
        if model not in models:
            raise ConfigError(f"watermark: {who} names model {model!r}, which `models` lacks "
                              f"(known: {', '.join(models)})")  # fmt: skip


def model_folder(track_config: Mapping[str, Any], model: str) -> str:
    entry = track_config["models"][model]
    return DEMO_MODEL.format(model=model) if entry.get("demo") else entry["path"]


def model_inputs(track_config: Mapping[str, Any], model: str | None) -> list[str]:
    """A demo model is a rule's input (its folder is built first); a real one is a param,
    so a dry-run works anywhere and a missing folder is reported by the stage."""
    if model and track_config["models"][model].get("demo"):
        return [DEMO_MODEL.format(model=model)]
    return []


def first_runs(runs: Iterable[Any]) -> list[Any]:
    """The first seed's run of every experiment: one curve each in the figures."""
    seen: dict[str, Any] = {}
    for run in runs:
        seen.setdefault(run.experiment, run)
    return list(seen.values())
