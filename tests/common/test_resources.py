"""Resource classes: site maps, overlays, attempt-scaled runtimes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import ROOT
from workflow.common.config import ConfigError
from workflow.common.resources import (
    CLASSES,
    DISK_MB,
    DISTRIBUTED,
    chosen_resources,
    class_resources,
    load_site,
)

LEONARDO = ROOT / "profiles/leonardo/resources.yaml"
DEBUG = ROOT / "profiles/leonardo-debug/resources.yaml"


def write(path, obj):
    path.write_text(yaml.safe_dump(obj))
    return path


def test_without_a_site_every_class_runs_locally_without_gpus():
    for name in CLASSES:
        resources = class_resources(name)
        assert resources.get("gpu", 0) == 0 and "slurm_partition" not in resources
        assert resources["runtime"](None, 1) > 0
    assert class_resources("GPU_NODE_DDP")["mpi"] == ""


def test_leonardo_map_defines_every_class_and_charges_the_account():
    site = load_site([LEONARDO], environ={"LEONARDO_ACCOUNT": "IscrB_X"})
    assert set(site["classes"]) == set(CLASSES)
    for name in CLASSES:
        assert class_resources(name, site)["slurm_account"] == "IscrB_X"
    assert class_resources("GPU_1", site)["gpu"] == 1
    assert all(class_resources(n, site)["mpi"] == "srun" for n in DISTRIBUTED)


def test_runtime_scales_with_attempt_up_to_the_cap():
    site = load_site([LEONARDO], environ={"LEONARDO_ACCOUNT": "a"})
    runtime = class_resources("GPU_1", site)["runtime"]
    assert [runtime(None, a) for a in (1, 2, 3)] == [720, 1440, 1440]
    assert "max_runtime" not in class_resources("GPU_1", site)


def test_overlay_changes_only_what_it_names():
    site = load_site([LEONARDO, DEBUG], environ={"LEONARDO_ACCOUNT": "a"})
    gpu = class_resources("GPU_1", site)
    assert gpu["qos"] == "boost_qos_dbg" and gpu["runtime"](None, 3) == 30
    assert gpu["gpu"] == 1 and gpu["mem_mb"] == 120000
    assert class_resources("CPU_PREP", site)["qos"] == "normal"


def test_null_in_an_overlay_unsets_a_key(tmp_path):
    overlay = write(tmp_path / "o.yaml", {"account": None, "classes": {"GPU_1": {"qos": None}}})
    site = load_site([LEONARDO, overlay], environ={})  # no account needed any more
    gpu = class_resources("GPU_1", site)
    assert "qos" not in gpu and "slurm_account" not in gpu


def test_unset_account_variable_names_the_file_and_the_fix():
    site = load_site([LEONARDO], environ={})
    assert (
        "leonardo/resources.yaml: account is $LEONARDO_ACCOUNT, which is not set"
        in (site["unset_account"])
    )
    assert "export LEONARDO_ACCOUNT=" in site["unset_account"]
    assert "slurm_account" not in class_resources("GPU_1", site)
    assert "unset_account" not in load_site([LEONARDO], environ={"LEONARDO_ACCOUNT": "a"})


def test_unknown_class_and_missing_file_are_reported(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"classes": {"GPU_8": {"gpu": 8}}})
    with pytest.raises(ConfigError, match="unknown resource class GPU_8"):
        load_site([bad])
    with pytest.raises(ConfigError, match="resource map not found"):
        load_site([tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="unknown resource class"):
        class_resources("TPU")


def test_chosen_resources_follow_the_experiment_per_job():
    site = load_site([LEONARDO], environ={"LEONARDO_ACCOUNT": "a"})
    choice = {"one": "GPU_NODE_DDP", "many": "GPU_MULTINODE_DDP"}
    resources = chosen_resources(lambda wc: choice[wc.experiment], DISTRIBUTED, site)
    one, many = SimpleNamespace(experiment="one"), SimpleNamespace(experiment="many")
    assert resources["nodes"](one, 1) == 1 and resources["nodes"](many, 1) == 4
    assert resources["runtime"](many, 2) == 1440


def test_chosen_classes_must_share_their_keys(tmp_path):
    overlay = write(tmp_path / "o.yaml", {"classes": {"GPU_MULTINODE_DDP": {"constraint": "x"}}})
    site = load_site([LEONARDO, overlay], environ={"LEONARDO_ACCOUNT": "a"})
    with pytest.raises(ConfigError, match="must set the same keys"):
        chosen_resources(lambda wc: "GPU_NODE_DDP", DISTRIBUTED, site)


def test_every_class_fixes_disk_so_snakemake_never_sizes_inputs():
    site = load_site([LEONARDO], environ={"LEONARDO_ACCOUNT": "a"})
    for name in CLASSES:
        assert class_resources(name)["disk_mb"] == DISK_MB
        assert class_resources(name, site)["disk_mb"] == DISK_MB
    assert set(chosen_resources(lambda wc: "GPU_NODE_DDP", DISTRIBUTED, site)) >= {"disk_mb"}
