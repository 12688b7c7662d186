"""Config validation against ``config/schema/`` and per-experiment settings.

Validation fills defaults from the schema and reports every problem with the dotted key that
holds it, so a typo in a 200-line config is found in one read.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:
    from referencing._core import Resolver


T = TypeVar("T")


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


def _fill_defaults(instance: Any, schema: Mapping[str, Any], resolver: Resolver) -> None:
    """Fill ``default`` values through ``properties`` (and ``$ref``s), in place.

    Maps keyed by user names (``additionalProperties``: datasets, experiments) are not filled:
    an experiment holds only its overrides, so the track defaults stay the single source.
    """
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        schema, resolver = resolved.contents, resolved.resolver
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        target, target_resolver = sub, resolver
        if "$ref" in sub:
            # The referring schema's own keys (a section's `default: {}`) win over the target's.
            resolved = resolver.lookup(sub["$ref"])
            local = {k: v for k, v in sub.items() if k != "$ref"}
            target, target_resolver = {**resolved.contents, **local}, resolved.resolver
        if key not in instance and "default" in target:
            instance[key] = copy.deepcopy(target["default"])
        if key in instance:
            _fill_defaults(instance[key], target, target_resolver)


#: The root of the schema every config and every stage's settings are checked against; each
#: track's section lives beside it in ``config/schema/<track>.yaml``.
SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema" / "config.yaml"


@dataclass(frozen=True)
class Schema:
    """The root schema and the files beside it, registered under their file names so that
    ``distance.yaml#/$defs/distance_train`` resolves from any of them."""

    path: Path
    root: dict[str, Any]
    registry: Registry
    #: ``$defs`` name -> the file name that holds it (names are unique across files).
    homes: dict[str, str]

    def definition(self, name: str) -> dict[str, Any]:
        """The contents of ``$defs/<name>``, wherever it lives."""
        if name not in self.homes:
            raise ConfigError(f"{self.path.parent}: no $defs/{name}")
        return self.registry[self.homes[name]].contents["$defs"][name]

    def problems(self, instance: Any, schema: Mapping[str, Any]) -> list[str]:
        """Fill ``instance``'s defaults in place; describe what still does not match."""
        _fill_defaults(instance, schema, self.registry.resolver())
        validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [_describe(e) for e in errors]


@functools.cache
def _load_schema(path: Path) -> Schema:
    resources: list[tuple[str, Resource[Any]]] = []
    homes: dict[str, str] = {}
    for file in sorted(path.parent.glob("*.yaml")):
        contents = load_yaml(file)
        for name in contents.get("$defs", {}):
            if name in homes:
                raise ConfigError(f"{file}: $defs/{name} is also in {homes[name]}")
            homes[name] = file.name
        resource = Resource.from_contents(contents, default_specification=DRAFT202012)
        resources.append((file.name, resource))
        if file == path:  # the root is also the base that a bare "#/..." resolves against
            resources.append(("", resource))
    if not any(uri == "" for uri, _ in resources):
        raise ConfigError(f"{path}: no such schema")
    root = load_yaml(path)
    return Schema(path, root, Registry().with_resources(resources), homes)


def load_schema(path: str | Path = SCHEMA) -> Schema:
    """The schema rooted at ``path`` with every ``*.yaml`` beside it (read once per process)."""
    return _load_schema(Path(path).resolve())


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate ``config`` in place (defaults filled) or raise ``ConfigError``."""
    schema = load_schema(schema_path)
    problems = schema.problems(config, schema.root)
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
    schema = load_schema(schema_path)
    schema.definition(definition)  # a clear error for an unknown name
    if not isinstance(settings, dict):
        raise ConfigError(f"expected a JSON object, got {type(settings).__name__}")
    reference = f"{schema.homes[definition]}#/$defs/{definition}"
    problems = schema.problems(settings, {"$ref": reference})
    if problems:
        raise ConfigError("; ".join(problems))
    return settings


def schema_defaults(definition: str, schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Every default of ``$defs/<definition>``: what a library call takes for a setting it is
    not given, so the pipeline and a direct call agree (the schema is their one source)."""
    return copy.deepcopy(_defaults(definition, Path(schema_path).resolve()))


@functools.cache
def _defaults(definition: str, schema_path: Path) -> dict[str, Any]:
    return stage_settings({}, definition, schema_path)


def frozen(value: Any) -> Any:
    """``value`` with its lists as tuples, for a frozen dataclass field's default."""
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: frozen(v) for k, v in value.items()}
    return value


def settings_object(cls: type[T], settings: Mapping[str, Any]) -> T:
    """A frozen settings dataclass from a stage's ``--settings`` (JSON lists become tuples)."""
    return cls(**{k: frozen(v) for k, v in settings.items()})


_JSON_TYPES = {"integer": int, "number": float, "string": str, "boolean": bool, "array": tuple}


def schema_dataclass(
    name: str,
    definition: str,
    module: str,
    constants: Sequence[tuple[str, Any, Any]] = (),
    **namespace: Any,
) -> type:
    """A frozen dataclass whose fields are ``$defs/<definition>``'s properties, in the
    schema's order, with the schema's defaults (lists as tuples) and descriptions (in each
    field's metadata): the settings a library takes are declared once, in the schema.
    ``constants`` (name, type, default) follow them: fixed parts of a design that the config
    does not set but a test may vary. ``namespace`` adds methods (e.g. a ``__post_init__``
    check the schema cannot express)."""
    spec = load_schema().definition(definition)
    defaults = frozen(schema_defaults(definition))
    fields = []
    for key, prop in spec["properties"].items():
        kind = prop.get("type")
        hint = _JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any
        meta = {"description": prop.get("description", "")}
        fields.append((key, hint, dataclasses.field(default=defaults[key], metadata=meta)))
    fields += [(key, hint, dataclasses.field(default=default)) for key, hint, default in constants]
    cls = dataclasses.make_dataclass(name, fields, frozen=True, namespace=namespace)
    cls.__module__ = module  # where it is defined and pickled from
    cls.__doc__ = f"{spec.get('description', '').strip()} (config/schema: $defs/{definition})"
    return cls


def schema_default(key: str, schema_path: str | Path = SCHEMA) -> Any:
    """The default of a top-level config key: a script's option that mirrors it takes this
    as its own default, so the value lives in the schema only."""
    return copy.deepcopy(load_schema(schema_path).root["properties"][key]["default"])


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
