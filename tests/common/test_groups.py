"""Groups: names, group files, their experiments as <group>/<experiment>, report folders."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import ROOT
from workflow.common.config import ConfigError, load_yaml, validate_config
from workflow.common.errors import InputError
from workflow.common.experiments import runs
from workflow.common.groups import group_names, read_group, report_folder, with_groups


@pytest.fixture(scope="module")
def shared() -> dict:
    return validate_config(load_yaml(ROOT / "config/config.yaml"))


def write(root, name: str, text: str) -> None:
    (root / "groups").mkdir(exist_ok=True)
    (root / "groups" / f"{name}.yaml").write_text(text)


def test_group_names():
    assert group_names(None) == [] and group_names("") == []
    assert group_names("alice") == ["alice"]
    assert group_names("alice, bob,alice") == ["alice", "bob"]
    assert group_names(["bob", "alice"]) == ["bob", "alice"]
    for bad in ("../x", "a/b", "1st", "al ice"):
        with pytest.raises(ConfigError, match="a name of letters"):
            group_names(bad)


def test_a_groups_experiments_run_under_its_name(tmp_path, shared):
    write(tmp_path, "alice", "distance:\n  experiments:\n    wide: {dropout: 0.2, seeds: [0, 1]}\n")
    write(tmp_path, "bob", "distance:\n  experiments:\n    wide: {lr: 0.001}\n")
    config = copy.deepcopy(shared)
    added = with_groups(config, ["alice", "bob"], tmp_path)
    assert added == {"distance": ["alice/wide", "bob/wide"]}  # one name, two groups: no clash
    folders = {r.folder for r in runs(config, "distance") if "/wide" in r.experiment}
    assert folders == {
        "results/distance/demo/alice/wide/seed0",
        "results/distance/demo/alice/wide/seed1",
        "results/distance/demo/bob/wide/seed0",
    }
    assert config["distance"]["experiments"]["alice/wide"] == {"dropout": 0.2, "seeds": [0, 1]}
    assert set(shared["distance"]["experiments"]) <= set(config["distance"]["experiments"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("distance: [", "not a readable YAML file"),
        ("", "expected <track>: {experiments"),
        ("chess:\n  experiments: {}\n", "chess: not an enabled track"),
        ("distance:\n  train: {lr: 1}\n", "a group sets experiments only"),
        ("distance:\n  experiments:\n    x: {hiddn: 3}\n", "distance.experiments.x: unknown key"),
        ("distance:\n  experiments:\n    x: {model: nope}\n", "distance.experiments.x: model"),
        ("distance:\n  experiments:\n    a/b: {}\n", "distance.experiments.a/b: not a name"),
    ],
)
def test_a_bad_group_file_names_itself(tmp_path, text, message):
    write(tmp_path, "carol", text)
    with pytest.raises(InputError, match=message) as err:
        read_group("carol", ["distance"], tmp_path)
    assert err.value.path == str(tmp_path / "groups/carol.yaml")


def test_a_missing_group_file(tmp_path):
    with pytest.raises(InputError, match="no such file: group dave has no experiments file"):
        read_group("dave", ["distance"], tmp_path)


def test_report_folders():
    assert report_folder([]) == "results/report"
    assert report_folder(["alice"]) == "results/report/alice"
    assert report_folder(["alice", "bob"]) == "results/report/alice+bob"
