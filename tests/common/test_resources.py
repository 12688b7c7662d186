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
    launch_of,
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
        assert "mpi" not in resources and launch_of(name) == ""  # one process, no srun


ACCOUNTS = {"LEONARDO_ACCOUNT": "IscrB_BOOST", "LEONARDO_DCGP_ACCOUNT": "IscrB_DCGP"}


def test_leonardo_charges_each_partition_to_its_own_budget():
    site = load_site([LEONARDO], environ=ACCOUNTS)
    assert set(site["classes"]) == set(CLASSES)
    partition_account = {
        (res["slurm_partition"], res["slurm_account"])
        for res in (class_resources(name, site) for name in CLASSES)
    }
    assert partition_account == {
        ("lrd_all_serial", "IscrB_BOOST"),
        ("dcgp_usr_prod", "IscrB_DCGP"),
        ("boost_usr_prod", "IscrB_BOOST"),
    }
    assert class_resources("GPU_1", site)["gpu"] == 1
    assert all(class_resources(n, site)["mpi"] == "srun" for n in DISTRIBUTED)


def test_a_class_account_is_not_overwritten_by_the_map_account(tmp_path):
    site_map = write(
        tmp_path / "site.yaml",
        {
            "account": "default_budget",
            "classes": {
                name: {"runtime": 10, **({"account": "own_budget"} if name == "CPU_SMALL" else {})}
                for name in CLASSES
            },
        },
    )
    site = load_site([site_map], environ={})
    assert class_resources("CPU_SMALL", site)["slurm_account"] == "own_budget"
    assert class_resources("GPU_1", site)["slurm_account"] == "default_budget"
    # an overlay's null removes the class's account only
    overlay = write(tmp_path / "o.yaml", {"classes": {"GPU_1": {"account": None}}})
    site = load_site([site_map, overlay], environ={})
    assert "slurm_account" not in class_resources("GPU_1", site)
    assert class_resources("CPU_PREP", site)["slurm_account"] == "default_budget"


def test_an_unset_class_account_variable_is_named_with_its_file():
    site = load_site([LEONARDO], environ={"LEONARDO_ACCOUNT": "IscrB_BOOST"})
    assert site["unset_account"] == (
        f"{LEONARDO}: account is $LEONARDO_DCGP_ACCOUNT, which is not set; "
        "export LEONARDO_DCGP_ACCOUNT=<your budget> (saldo -b lists them)"
    )
    assert "slurm_account" not in class_resources("CPU_PREP", site)
    assert class_resources("GPU_1", site)["slurm_account"] == "IscrB_BOOST"


def test_runtime_scales_with_attempt_up_to_the_cap():
    site = load_site([LEONARDO], environ=ACCOUNTS)
    runtime = class_resources("GPU_1", site)["runtime"]
    assert [runtime(None, a) for a in (1, 2, 3)] == [720, 1440, 1440]
    assert "max_runtime" not in class_resources("GPU_1", site)


def test_overlay_changes_only_what_it_names():
    site = load_site([LEONARDO, DEBUG], environ=ACCOUNTS)
    gpu = class_resources("GPU_1", site)
    assert gpu["qos"] == "boost_qos_dbg" and gpu["runtime"](None, 3) == 30
    assert gpu["gpu"] == 1 and gpu["mem_mb"] == 120000
    assert class_resources("CPU_PREP", site)["qos"] == "dcgp_qos_dbg"
    assert class_resources("CPU_PREP", site)["cpus_per_task"] == 16  # the base map's


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
    assert "unset_account" not in load_site([LEONARDO], environ=ACCOUNTS)


def test_unknown_class_and_missing_file_are_reported(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"classes": {"GPU_8": {"gpus": 8}}})
    with pytest.raises(ConfigError, match="unknown resource class GPU_8"):
        load_site([bad])
    with pytest.raises(ConfigError, match="resource map not found"):
        load_site([tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="unknown resource class"):
        class_resources("TPU")


def test_chosen_resources_follow_the_experiment_per_job():
    site = load_site([LEONARDO], environ=ACCOUNTS)
    choice = {"one": "GPU_NODE_DDP", "many": "GPU_MULTINODE_DDP"}
    resources = chosen_resources(lambda wc: choice[wc.experiment], DISTRIBUTED, site)
    one, many = SimpleNamespace(experiment="one"), SimpleNamespace(experiment="many")
    assert resources["nodes"](one, 1) == 1 and resources["nodes"](many, 1) == 4
    assert resources["runtime"](many, 2) == 1440


def test_chosen_classes_must_share_their_keys(tmp_path):
    overlay = write(tmp_path / "o.yaml", {"classes": {"GPU_MULTINODE_DDP": {"constraint": "x"}}})
    site = load_site([LEONARDO, overlay], environ=ACCOUNTS)
    with pytest.raises(ConfigError, match="must set the same keys"):
        chosen_resources(lambda wc: "GPU_NODE_DDP", DISTRIBUTED, site)


def test_every_class_fixes_disk_so_snakemake_never_sizes_inputs():
    site = load_site([LEONARDO], environ=ACCOUNTS)
    for name in CLASSES:
        assert class_resources(name)["disk_mb"] == DISK_MB
        assert class_resources(name, site)["disk_mb"] == DISK_MB
    assert set(chosen_resources(lambda wc: "GPU_NODE_DDP", DISTRIBUTED, site)) >= {"disk_mb"}
