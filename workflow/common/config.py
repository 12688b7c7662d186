"""Config validation against ``config/schema.yaml`` and per-experiment settings.

Validation fills defaults from the schema and reports every problem with the dotted key that
holds it, so a typo in a 200-line config is found in one read.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


class ConfigError(ValueError):
    """The config does not match the schema; the message names each offending key."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def _dotted(path: Iterator[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _dotted(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if where != "<top level>" else k for k in extra)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {keys}{hint}"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        prefix = "" if where == "<top level>" else f"{where}."
        return "missing key " + ", ".join(prefix + k for k in missing)
    return f"{where}: {error.message}"


def _fill_defaults(instance: Any, schema: Mapping[str, Any], registry: Registry) -> None:
    """Fill ``default`` values through ``properties`` (and ``$ref``s), in place.

    Maps keyed by user names (``additionalProperties``: datasets, experiments) are not filled:
    an experiment holds only its overrides, so the track defaults stay the single source.
    """
    if "$ref" in schema:
        schema = registry.resolver().lookup(schema["$ref"]).contents
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        target = sub
        if "$ref" in sub:
            target = {**registry.resolver().lookup(sub["$ref"]).contents, **sub}
        if key not in instance and "default" in target:
            instance[key] = copy.deepcopy(target["default"])
        if key in instance:
            _fill_defaults(instance[key], target, registry)


#: The schema every config and every stage's settings are checked against.
SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def _problems(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    """Fill ``instance``'s defaults in place; describe what still does not match ``schema``."""
    registry = _root_registry(root)
    _fill_defaults(instance, schema, registry)
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [_describe(e) for e in errors]


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate ``config`` in place (defaults filled) or raise ``ConfigError``."""
    schema = load_yaml(schema_path)
    problems = _problems(config, schema, schema)
    if problems:
        lines = "\n  ".join(problems)
        raise ConfigError(f"config does not match {schema_path}:\n  {lines}")
    return config


def stage_settings(
    settings: Any, definition: str, schema_path: str | Path = SCHEMA
) -> dict[str, Any]:
    """A stage's ``--settings`` object checked against ``$defs/<definition>``, defaults filled.

    Rules pass a whole config section; a stage run by hand may pass only the keys it changes.
    """
    schema = load_yaml(schema_path)
    if definition not in schema.get("$defs", {}):
        raise ConfigError(f"{schema_path}: no $defs/{definition}")
    if not isinstance(settings, dict):
        raise ConfigError(f"expected a JSON object, got {type(settings).__name__}")
    # By reference into the whole schema, so the definition's own $refs resolve there too.
    problems = _problems(settings, {"$ref": f"{ROOT_URI}#/$defs/{definition}"}, schema)
    if problems:
        raise ConfigError("; ".join(problems))
    return settings


ROOT_URI = "urn:lsai:config"


def schema_default(key: str, schema_path: str | Path = SCHEMA) -> Any:
    """The default of a top-level config key: a script's option that mirrors it takes this
    as its own default, so the value lives in the schema only."""
    return copy.deepcopy(load_yaml(schema_path)["properties"][key]["default"])


def _root_registry(schema: Mapping[str, Any]) -> Registry:
    """A registry in which ``#/$defs/...`` references (and ``ROOT_URI#/$defs/...`` ones, from
    a definition validated alone) resolve against ``schema``."""
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    return Registry().with_resources([("", resource), (ROOT_URI, resource)])


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` onto a copy of ``base``; nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def experiment_settings(track_config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """A track's ``train`` defaults with the experiment's overrides merged on top."""
    experiments = track_config.get("experiments", {})
    if experiment not in experiments:
        raise ConfigError(f"unknown experiment {experiment!r} (known: {', '.join(experiments)})")
    return deep_merge(track_config.get("train", {}), experiments[experiment] or {})


def config_hash(obj: Any) -> str:
    """A short, stable hash of settings, recorded in every metrics.json."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
