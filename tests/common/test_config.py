from pathlib import Path

import pytest
import yaml

from workflow.common.config import (
    ConfigError,
    config_hash,
    deep_merge,
    experiment_settings,
    load_schema,
    stage_settings,
    validate_config,
)
from workflow.common.experiments import run_settings, runs

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "schema" / "config.yaml"


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults():
    config = validate_config(default_config(), SCHEMA)
    assert config["distance"]["train"]["weight_decay"] == 0.0  # filled from the schema
    assert config["distance"]["index"]["split_sequences"] is None
    # experiments hold overrides only: no defaults are filled into them
    assert config["distance"]["experiments"]["mean"] == {"model": "mean"}


def test_leonardo_overlay_is_valid():
    config = deep_merge(
        default_config(), yaml.safe_load((ROOT / "config/leonardo.yaml").read_text())
    )
    validate_config(config, SCHEMA)
    assert {r.dataset for r in runs(config, "distance")} == {"motsynth"}


def test_leonardo_experiments_do_not_inherit_the_demos_shortcuts():
    """The overlay merges experiment by experiment: a demo-only shortcut (fewer epochs, folds)
    under the same name would silently shrink the real run unless Leonardo spells it out."""
    leonardo = yaml.safe_load((ROOT / "config/leonardo.yaml").read_text())
    config = validate_config(deep_merge(default_config(), leonardo), SCHEMA)
    for track in ("distance", "wsi", "sequence", "nerf"):
        epochs = config[track]["train"].get("max_epochs")
        for name, own in leonardo[track]["experiments"].items():
            settings = experiment_settings(config[track], name)
            assert settings.get("max_epochs") == own.get("max_epochs", epochs), (track, name)
            assert settings.get("folds") == own.get("folds"), (track, name)
    for track in config["tracks"]:  # a variant the demo leaves out still runs on Leonardo
        for name in config[track]["experiments"]:
            assert experiment_settings(config[track], name).get("enabled", True), (track, name)


def test_unknown_key_is_named():
    config = default_config()
    config["distance"]["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown key distance\.train\.learning_rate"):
        validate_config(config, SCHEMA)


def test_wrong_type_is_named():
    config = default_config()
    config["distance"]["experiments"]["zhu"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"distance\.experiments\.zhu\.lr: 'fast' is not of type"):
        validate_config(config, SCHEMA)


def test_experiment_overrides_merge_onto_track_defaults():
    config = validate_config(default_config(), SCHEMA)
    zhu = experiment_settings(config["distance"], "zhu")
    assert zhu["model"] == "zhu"
    assert zhu["batch_size"] == 8 and zhu["max_epochs"] == 10  # overrides
    assert zhu["backbone"] == config["distance"]["train"]["backbone"]  # default
    with pytest.raises(ConfigError, match="unknown experiment"):
        experiment_settings(config["distance"], "nope")


def test_runs_expand_experiments_and_seeds():
    config = validate_config(default_config(), SCHEMA)
    config["distance"]["experiments"]["wide"] = {"model": "disnet", "seeds": [4, 5]}
    got = {(r.experiment, r.seed) for r in runs(config, "distance")}
    assert ("wide", 4) in got and ("wide", 5) in got and ("mean", 0) in got
    assert ("disnet", 2) in got


def test_disabled_experiments_leave_the_runs_but_keep_their_settings():
    config = validate_config(default_config(), SCHEMA)
    config["distance"]["experiments"]["zhu"]["enabled"] = False
    assert "zhu" not in {r.experiment for r in runs(config, "distance")}
    assert "enabled" not in run_settings(config["distance"], "zhu")  # not part of training
    config["distance"]["train"]["enabled"] = False  # every experiment off unless it opts in
    config["distance"]["experiments"]["mean"]["enabled"] = True
    assert {r.experiment for r in runs(config, "distance")} == {"mean"}
    config["distance"]["experiments"]["mean"]["enabled"] = "no"
    with pytest.raises(ConfigError, match="enabled"):
        validate_config(config, SCHEMA)


def test_dataset_without_root_is_rejected():
    config = validate_config(default_config(), SCHEMA)
    config["distance"]["datasets"]["real"] = {"enabled": True, "demo": False, "root": None}
    with pytest.raises(ConfigError, match=r"distance\.datasets\.real: needs `root`"):
        runs(config, "distance")


def test_config_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_schema_descriptions_are_whole_strings():
    """A comma in an unquoted description of a YAML flow mapping splits it into a stray key
    that maps to null: the description is cut and the key looks like a schema keyword."""
    schema = yaml.safe_load(SCHEMA.read_text())
    stray = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if value is None and key != "default":
                    stray.append(".".join(map(str, [*path, key])))
                walk(value, [*path, key])
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, [*path, index])

    walk(schema, [])
    assert not stray


TRACKS = ("distance", "wsi", "sequence", "flip", "watermark", "nerf")


def test_each_track_section_lives_in_its_own_schema_file():
    """config/schema/<track>.yaml holds every `$defs/<track>*` and nothing else; the root holds
    the shared definitions, and every track file is referenced from the root."""
    schema = load_schema(SCHEMA)
    for name, home in schema.homes.items():
        track = next((t for t in TRACKS if name == t or name.startswith(t + "_")), "config")
        assert home == f"{track}.yaml", name
    root = (ROOT / "config" / "schema" / "config.yaml").read_text()
    for track in TRACKS:
        assert f'$ref: "{track}.yaml#/$defs/{track}"' in root


def test_a_definition_in_two_schema_files_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("type: object\n$defs: {a: {type: integer}}\n")
    (tmp_path / "other.yaml").write_text("$defs: {a: {type: string}}\n")
    with pytest.raises(ConfigError, match=r"other.yaml: \$defs/a is also in config.yaml"):
        load_schema(tmp_path / "config.yaml")


def test_references_across_schema_files_resolve_and_fill_defaults(tmp_path):
    """A section in its own file, with a reference back to the root's shared definitions."""
    (tmp_path / "config.yaml").write_text(
        "type: object\nproperties:\n  t: {$ref: 't.yaml#/$defs/t', default: {}}\n"
        "$defs:\n  steps: {type: integer, default: 7}\n"
    )
    (tmp_path / "t.yaml").write_text(
        "$defs:\n  t:\n    type: object\n    additionalProperties: false\n    properties:\n"
        "      n: {$ref: 'config.yaml#/$defs/steps'}\n      inner: {$ref: '#/$defs/t_inner'}\n"
        "  t_inner: {type: object, properties: {x: {type: string, default: a}}, default: {}}\n"
    )
    assert validate_config({}, tmp_path / "config.yaml") == {"t": {"n": 7, "inner": {"x": "a"}}}
    with pytest.raises(ConfigError, match="t.n: 'x' is not of type 'integer'"):
        validate_config({"t": {"n": "x"}}, tmp_path / "config.yaml")
    assert stage_settings({}, "t_inner", tmp_path / "config.yaml") == {"x": "a"}


def test_a_schema_dataclass_has_the_definitions_fields_defaults_and_descriptions():
    import dataclasses

    from workflow.common.config import schema_dataclass

    seen = []
    Settings = schema_dataclass(
        "Settings", "distance_demo", __name__, __post_init__=lambda self: seen.append(self.seed)
    )
    spec = yaml.safe_load((SCHEMA.parent / "distance.yaml").read_text())["$defs"]["distance_demo"]
    fields = dataclasses.fields(Settings)
    assert [f.name for f in fields] == list(spec["properties"])
    for f in fields:
        default = spec["properties"][f.name]["default"]
        assert f.default == (tuple(default) if isinstance(default, list) else default)
        assert f.metadata["description"] == spec["properties"][f.name]["description"]
    settings = Settings(seed=5)
    assert settings.seed == 5 and seen == [5] and Settings.__module__ == __name__
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        Settings(not_a_setting=1)
