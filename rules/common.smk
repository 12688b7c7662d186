# Shared helpers of every track's rules: run expansion, dataset inputs, resource classes.
# Keep Python logic in workflow/common (tested on its own); this file only wires it in.
import json

from workflow.common.experiments import enabled_datasets, run_settings, runs

# Resource classes: each rule picks one; profiles map them to a site (partition, GPUs...).
# `gpu` is the GPU count a rule asks for; the local profile keeps it 0 (CPU).
RESOURCE_CLASSES = {
    "CPU_SMALL": {"mem_mb": 2000, "runtime": 20},
    "CPU_PREP": {"mem_mb": 8000, "runtime": 120},
    "GPU_1": {"mem_mb": 16000, "runtime": 240, "gpu": 0},
}


def track_runs(track):
    return runs(config, track)


def as_json(obj):
    """Settings passed to a script as one JSON argument (quote it with {params.x:q})."""
    return json.dumps(obj, sort_keys=True)


def settings_of(track, experiment):
    return as_json(run_settings(config[track], experiment))


def demo_manifest(track, dataset):
    return f"data/demo/{track}/{dataset}/manifest.json"


def dataset_root(track, dataset):
    entry = config[track]["datasets"][dataset]
    return f"data/demo/{track}/{dataset}" if entry.get("demo") else entry["root"]


def dataset_inputs(track, dataset):
    """A demo dataset depends on its generator; a real one is read from `root` as it is
    (its absence is reported by the reading stage as `error: <path>: ...`)."""
    return [demo_manifest(track, dataset)] if config[track]["datasets"][dataset].get("demo") else []
