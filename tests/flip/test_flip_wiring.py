"""What the FLIP rules are built from: shard groups from the config, and the mask-ratio figure."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT
from workflow.common.config import ConfigError, deep_merge, validate_config
from workflow.flip import sources
from workflow.flip.layout import expand_shards, shard_groups
from workflow.flip.plots import mask_ratio_figure, runs_table
from workflow.flip.sources import check_models, filtered_folders, input_groups, val_folder


def test_brace_patterns_expand_in_shard_order():
    shards = expand_shards("/data/laion/{00000..00011}.tar")
    assert len(shards) == 12 and shards[0] == "/data/laion/00000.tar"
    assert shards[-1] == "/data/laion/00011.tar" and list(shards) == sorted(shards)
    assert expand_shards("/data/one.tar") == ("/data/one.tar",)


def test_shard_groups_are_consecutive_and_cover_every_shard_once():
    shards = [f"{i:05d}.tar" for i in range(11)]
    groups = shard_groups(shards, 4)
    assert [len(g) for g in groups] == [4, 4, 3]
    assert [s for g in groups for s in g] == shards
    assert shard_groups(shards, 100) == [shards]
    with pytest.raises(ValueError, match="shards_per_group"):
        shard_groups(shards, 0)


def test_rules_get_groups_and_val_folders_from_the_config():
    track = {
        "datasets": {"demo": {"demo": True}, "laion": {"shards": "/d/{000..004}.tar", "val": "/v"}},
        "demo": {"shards": 3},
        "filter": {"shards_per_group": 2},
    }
    assert input_groups(track, "demo") == [
        ["data/demo/flip/demo/shards/00000.tar", "data/demo/flip/demo/shards/00001.tar"],
        ["data/demo/flip/demo/shards/00002.tar"],
    ]
    assert [len(g) for g in input_groups(track, "laion")] == [2, 2, 1]
    assert filtered_folders(track, "laion")[-1] == "results/flip/laion/filtered/group2"
    assert val_folder(track, "demo") == "data/demo/flip/demo" and val_folder(track, "laion") == "/v"


def record(experiment: str, seed: int, ratio: float, speed: float, top1: float) -> dict:
    return {
        "experiment": experiment, "seed": seed,
        "metrics": {"zeroshot_top1": top1, "zeroshot_top5": 1.0, "probe_top1": top1 + 0.1},
        "extra": {"mask_ratio": ratio, "images_per_s": speed},
    }  # fmt: skip


def test_mask_ratio_figure_draws_every_run(tmp_path):
    records = [
        record("clip", 0, 0.0, 100.0, 0.4), record("clip", 1, 0.0, 110.0, 0.5),
        record("flip75", 0, 0.75, 290.0, 0.35),
    ]  # fmt: skip
    table = runs_table(records)
    assert list(table.groupby("mask_ratio")["images_per_s"].mean()) == [105.0, 290.0]
    mask_ratio_figure(records, tmp_path / "fig.png", chance=1 / 16)
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def flip_track(**experiments: dict) -> dict:
    return {"train": {"model": "flip-tiny"}, "experiments": experiments}


def test_an_unknown_model_is_a_config_error_naming_the_experiment():
    check_models(flip_track(a={}, b={"model": "ViT-B-16"}))
    with pytest.raises(ConfigError) as err:
        check_models(flip_track(a={}, b={"model": "ViT-B-61"}, c={"model": "nope"}))
    message = str(err.value)
    assert message.startswith("flip: experiment 'b' names model 'ViT-B-61', which open_clip")
    assert "ViT-B-16" in message.split("known names include ")[1]  # the close names
    with pytest.raises(ConfigError, match=r"experiment 'a' .*\(known names include flip-tiny, "):
        check_models({"train": {"model": "flip-huge-nonsense"}, "experiments": {"a": {}}})


def test_the_projects_own_models_are_checked_without_open_clip(monkeypatch):
    def refuse():
        raise AssertionError("open_clip asked for the project's own model")

    monkeypatch.setattr(sources, "known_models", refuse)
    check_models(flip_track(a={}, b={"model": "flip-tiny"}, c={"mask_ratio": 0.5}))


@pytest.mark.parametrize("overlay", [None, "config/leonardo.yaml"])
def test_the_shipped_configs_name_known_models(overlay):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    if overlay:
        config = deep_merge(config, yaml.safe_load((ROOT / overlay).read_text()))
    config = validate_config(config, ROOT / "config/schema/config.yaml")
    check_models(config["flip"])
