# Shared helpers of every track's rules: run expansion, dataset inputs, resource classes.
# Keep Python logic in workflow/common (tested on its own); this file only wires it in.
import functools
import json
import shlex
import sys

from workflow.common.config import ConfigError, deep_merge
from workflow.common.experiments import (
    enabled_datasets,
    experiment_pattern,
    experiment_seeds,
    run_settings,
    runs,
)
from workflow.common.resources import (
    DISTRIBUTED,
    chosen_resources,
    class_resources,
    class_spec,
    launch_of,
    load_site,
    with_checkpoint_default,
)
from workflow.common.sites import devices_per_node
from workflow.common.variants import variant_files
from snakemake_interface_executor_plugins.settings import DeploymentMethod

# Every job imports the workflow package from this checkout: `make setup` installs it into the
# venv, but a conda env (--sdm conda) or the Apptainer image (which drops the host's PYTHONPATH)
# does not have it, so the scripts find it through PYTHONPATH rather than editing sys.path.
# Snakemake's own prefix, bash's strict mode, stays.
shell.prefix(
    "set -euo pipefail; export PYTHONPATH="
    + shlex.quote(workflow.basedir)
    + '"${{PYTHONPATH:+:$PYTHONPATH}}"; '
)

# Every track's wildcards: dataset and experiment names as config/schema/config.yaml's
# name_map_key allows them (a group's experiment as <group>/<name>), seeds as numbers.
wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    experiment="(?:[A-Za-z][A-Za-z0-9_-]*/)?[A-Za-z0-9][A-Za-z0-9_-]*",
    seed=r"\d+",
    split="train|val|test",

# Resource classes (workflow/common/resources.py): each rule picks one by name; a profile maps
# the names to its site by loading resource maps (`config: [resource_maps=[...]]`).
try:
    SITE = load_site(config["resource_maps"]) if config.get("resource_maps") else None
except ConfigError as err:
    sys.exit(f"error: {err}")
if SITE and SITE.get("unset_account"):
    print(
        f"warning: {SITE['unset_account']}. Jobs are listed without an account; "
        "a run stops before submitting.",
        file=sys.stderr,
    )


def resource_class(name):
    return class_resources(name, SITE)


# The config is fixed for the whole run: settings and run lists are computed once, not per job
# (a DAG of thousands of jobs would otherwise spend most of its dry-run merging settings).
@functools.cache
def experiment_settings_of(track, experiment):
    """An experiment's settings; a training one checkpoints inside an epoch at least every
    quarter of its class's runtime (at most 30 min) unless the config says otherwise."""
    return with_checkpoint_default(run_settings(config[track], experiment), SITE)


def variant_inputs(track):
    """The files of the plug-in variants an experiment names (a rule's input: editing one
    reruns exactly that experiment's jobs)."""
    return lambda wc: variant_files(track, experiment_settings_of(track, wc.experiment))


def experiment_resources(track, choices):
    """Resources of a rule whose class is the experiment's `resources` setting."""
    return chosen_resources(
        lambda wc: experiment_settings_of(track, wc.experiment)["resources"], choices, SITE
    )


def experiments_matching(track, keep):
    """Regex of the track's experiments whose settings satisfy `keep` (a rule's share)."""
    return experiment_pattern(
        name for name in config[track]["experiments"] if keep(experiment_settings_of(track, name))
    )


@functools.cache
def track_runs(track):
    return tuple(runs(config, track))


def report_runs(track):
    """The report's runs: every run; with groups, the groups' runs and the track's
    baseline's."""
    if not GROUPS:
        return track_runs(track)
    keep = {*GROUP_EXPERIMENTS.get(track, ()), config["baselines"].get(track)}
    return [run for run in track_runs(track) if run.experiment in keep]


@functools.cache
def dataset_runs(track, dataset):
    return tuple(run for run in track_runs(track) if run.dataset == dataset)


def as_json(obj):
    """Settings passed to a script as one JSON argument (quote it with {params.x:q})."""
    return json.dumps(obj, sort_keys=True)


@functools.cache
def settings_of(track, experiment):
    return as_json(experiment_settings_of(track, experiment))


def settings_with_dataset(track, *keys):
    """A params function: the experiment's settings, with the dataset's own values of `keys`
    where the dataset sets them (e.g. a scene's box), and the dataset's own `train` overrides
    on top (a dataset whose reference runs another setup, e.g. a WSI preset)."""

    def settings(wc):
        dataset = config[track]["datasets"][wc.dataset]
        own = {key: dataset[key] for key in keys if dataset.get(key) is not None}
        chosen = {**experiment_settings_of(track, wc.experiment), **own}
        return as_json(deep_merge(chosen, dataset.get("train") or {}))

    return settings


def demo_manifest(track, dataset):
    return f"data/demo/{track}/{dataset}/manifest.json"


def dataset_root(track, dataset):
    entry = config[track]["datasets"][dataset]
    return f"data/demo/{track}/{dataset}" if entry.get("demo") else entry["root"]


def dataset_path(track, dataset, key, demo_name):
    """A real dataset's `key` (a folder or file of the config), or `demo_name` in its demo."""
    entry = config[track]["datasets"][dataset]
    return f"data/demo/{track}/{dataset}/{demo_name}" if entry.get("demo") else entry[key]


def first_run(track, dataset, experiment):
    """The experiment's run with its first seed (e.g. the one a figure shows)."""
    for run in dataset_runs(track, dataset):
        if run.experiment == experiment:
            return run
    sys.exit(f"error: {track}: {experiment!r} is not an experiment of dataset {dataset}")


def published_runs(track, dataset):
    """The metrics files of every seed of the experiment a dataset's `published` names."""
    experiment = config[track]["datasets"][dataset]["published"]["experiment"]
    try:
        seeds = experiment_seeds(config[track], experiment, config["seeds"])
    except ConfigError as err:
        sys.exit(f"error: {track}.datasets.{dataset}.published: {err}")
    return [f"results/{track}/{dataset}/{experiment}/seed{seed}/metrics.json" for seed in seeds]


def dataset_inputs(track, dataset):
    """A demo dataset depends on its generator; a real one is read from `root` as it is
    (its absence is reported by the reading stage as `error: <path>: ...`)."""
    return [demo_manifest(track, dataset)] if config[track]["datasets"][dataset].get("demo") else []


# A training rule's launch, from its experiment's resource class and the site's scheduler
# (workflow/common/sites.py): DDP classes start one process per rank (srun on SLURM, torchrun
# elsewhere) and tell Lightning the devices per node and nodes the job holds.
def class_of(track, experiment):
    return experiment_settings_of(track, experiment)["resources"]


# Jobs in the Apptainer image (--sdm apptainer) start their DDP ranks from inside it.
IN_IMAGE = DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method


def run_launch(track):
    return lambda wc: launch_of(class_of(track, wc.experiment), SITE, IN_IMAGE)


def run_devices(track):
    return lambda wc: class_devices(class_of(track, wc.experiment))


def run_nodes(track):
    return lambda wc: int(class_spec(class_of(track, wc.experiment), SITE).get("nodes") or 1)


def class_devices(name):
    """Lightning's devices per node of class `name` (0: the CPU)."""
    return devices_per_node(class_spec(name, SITE))


def class_cpus(name):
    return int(class_spec(name, SITE).get("cpus_per_task") or 1)
