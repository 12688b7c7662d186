"""Named resource classes: a rule (or an experiment) says what kind of job it is, a site map
says what that kind asks the scheduler for.

Rules never name partitions, queues or schedulers. Without a site map (a laptop, CI) the
classes below apply. A profile loads a site map by setting
``config: [resource_maps=[<file>, ...]]``; later files (overlays such as the debug QOS)
override single keys of earlier ones. A site map file::

    scheduler: slurm              # slurm | lsf | htcondor | kubernetes (workflow/common/sites.py)
    account: $LEONARDO_ACCOUNT    # every class's account; null -> none (a test cluster)
    account_hint: saldo -b lists them   # said when an account variable is unset
    classes:
      CPU_PREP: {cpus_per_task: 16, mem_mb: 64000, runtime: 240, max_runtime: 1440,
                 account: $LEONARDO_DCGP_ACCOUNT, slurm_partition: dcgp_usr_prod}
      GPU_1: {gpus: 1, cpus_per_task: 8, mem_mb: 120000, runtime: 240, ...}

A class's keys are the generic ones of :data:`workflow.common.sites.GENERIC` (translated for
the scheduler) and the scheduler plugin's own (passed through). ``runtime`` is the first
attempt's limit in minutes; a retry after a time-out gets ``runtime * attempt``, capped at
``max_runtime`` (the partition's limit). ``disk_mb`` is optional (default :data:`DISK_MB`).
A class's own ``account`` replaces the map's (Leonardo budgets Booster and DCGP apart).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from workflow.common import sites
from workflow.common.config import ConfigError, deep_merge, load_yaml

#: Classes whose jobs start one process per rank themselves (``{params.launch} python ...``);
#: ``tasks_per_node`` is the ranks per node, ``nodes`` the node count of the DDP run.
DISTRIBUTED = ("GPU_NODE_DDP", "GPU_MULTINODE_DDP")

#: Scratch disk a job may claim when its class does not say. A fixed value, because Snakemake's
#: default (twice the size of the job's inputs) stats every input of every job: a fifth of a
#: large dry-run's time. Neither Leonardo's SLURM nor a local run allocates by it.
DISK_MB = 10000

_LOCAL_GPU = {"gpus": 0, "cpus_per_task": 4, "mem_mb": 16000, "runtime": 240}

#: What each class needs when no site map is loaded: local runs on the CPU, one process.
LOCAL: dict[str, dict[str, Any]] = {
    "CPU_SMALL": {"cpus_per_task": 1, "mem_mb": 2000, "runtime": 20},
    "CPU_PREP": {"cpus_per_task": 4, "mem_mb": 8000, "runtime": 120},
    "GPU_1": dict(_LOCAL_GPU),
    "GPU_NODE_DDP": {**_LOCAL_GPU, "nodes": 1, "tasks_per_node": 1},
    "GPU_MULTINODE_DDP": {**_LOCAL_GPU, "nodes": 1, "tasks_per_node": 1},
}
CLASSES = tuple(LOCAL)

_ENV_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


def _resolve_account(
    value: Any, where: str, environ: Mapping[str, str], unset: dict[str, str]
) -> str | None:
    """An account value: literal, or ``$VAR`` read from the environment (unset: None, and the
    variable is noted with the file that asks for it)."""
    match = _ENV_VAR.match(value) if isinstance(value, str) else None
    if not match:
        return None if value is None else str(value)
    name = match.group(1)
    if not environ.get(name):
        unset.setdefault(name, where)
    return environ.get(name) or None


def load_site(paths: Sequence[str | Path], environ: Mapping[str, str] = os.environ) -> dict:
    """Merge the site map files in order; resolve every class's account from the environment.

    An unset account variable is not an error here: ``unset_account`` holds the message, so a
    dry-run still lists the DAG and a real run can stop before submitting anything.
    """
    site: dict[str, Any] = {"scheduler": "slurm", "account": None, "classes": {}}
    sources = {"account": "", "classes": {}}
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: resource map not found")
        layer = load_yaml(path)
        unknown = set(layer.get("classes") or {}) - set(CLASSES)
        if unknown:
            raise ConfigError(
                f"{path}: unknown resource class {', '.join(sorted(unknown))} "
                f"(known: {', '.join(CLASSES)})"
            )
        site = deep_merge(site, layer)
        if "account" in layer:
            sources["account"] = str(path)
        for name, entry in (layer.get("classes") or {}).items():
            if "account" in (entry or {}):
                sources["classes"][name] = str(path)
    where = ", ".join(str(p) for p in paths)
    if site["scheduler"] not in sites.SCHEDULERS:
        raise ConfigError(
            f"{where}: unknown scheduler {site['scheduler']!r} "
            f"(known: {', '.join(sites.SCHEDULERS)})"
        )
    unset: dict[str, str] = {}
    default = site.get("account")
    site["account"] = _resolve_account(default, sources["account"], environ, unset)
    for name, entry in list(site["classes"].items()):
        entry = {k: v for k, v in (entry or {}).items() if v is not None or k == "account"}
        sites.check_class(site["scheduler"], name, entry, where)
        own = "account" in entry
        raw = entry.get("account") if own else default
        source = sources["classes"].get(name, "") if own else sources["account"]
        entry["account"] = _resolve_account(raw, source, environ, unset)
        site["classes"][name] = entry
    if unset:
        # A dry-run still shows the DAG; the workflow stops a real run on this message.
        hint = f" ({site['account_hint']})" if site.get("account_hint") else ""
        site["unset_account"] = "; ".join(
            f"{source}: account is ${name}, which is not set; export {name}=<your budget>{hint}"
            for name, source in unset.items()
        )
    return site


def class_spec(name: str, site: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Class ``name`` in generic keys (and the plugin's own): the site's, or the local one."""
    if name not in LOCAL:
        raise ConfigError(f"unknown resource class {name} (known: {', '.join(CLASSES)})")
    if site is None:
        return dict(LOCAL[name])
    if name not in site["classes"]:
        raise ConfigError(f"the resource map has no class {name}")
    return dict(site["classes"][name])


def scheduler_of(site: Mapping[str, Any] | None) -> str:
    return "local" if site is None else str(site.get("scheduler") or "slurm")


def launch_of(name: str, site: Mapping[str, Any] | None = None, contained: bool = False) -> str:
    """The command prefix that starts class ``name``'s training processes (sites.launch);
    ``contained``: the job runs in the Apptainer image."""
    return sites.launch(scheduler_of(site), class_spec(name, site), contained)


def _runtime(first: int, cap: int | None) -> Callable[..., int]:
    def runtime(wildcards: Any, attempt: int) -> int:
        minutes = first * attempt
        return min(minutes, cap) if cap else minutes

    return runtime


def checkpoint_minutes(runtime_minutes: float) -> float:
    """The default time between checkpoints of a job with that runtime limit: a quarter of
    it, at most 30 min (a time-out then loses at most half an hour of GPU time), at least 5."""
    return float(max(5.0, min(30.0, runtime_minutes / 4)))


def with_checkpoint_default(
    settings: Mapping[str, Any], site: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A training experiment's settings with ``checkpoint_every_minutes`` filled from its
    resource class's first-attempt runtime when the config leaves it null."""
    name = settings.get("resources")
    if settings.get("checkpoint_every_minutes") is not None or name not in LOCAL:
        return dict(settings)
    classes = LOCAL if site is None else site["classes"]
    runtime = (classes.get(name) or {}).get("runtime")
    if runtime is None:
        return dict(settings)
    return {**settings, "checkpoint_every_minutes": checkpoint_minutes(float(runtime))}


def class_resources(name: str, site: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Snakemake ``resources:`` of class ``name`` in the site's scheduler's words (or the
    local ones)."""
    spec = class_spec(name, site)
    resources = sites.scheduler_resources(scheduler_of(site), spec)
    for key in ("mem_mb", "disk_mb"):
        if spec.get(key) is not None:
            resources[key] = spec[key]
    resources["runtime"] = _runtime(int(spec["runtime"]), spec.get("max_runtime"))
    resources.setdefault("disk_mb", DISK_MB)
    return resources


def chosen_resources(
    choose: Callable[[Any], str], names: Sequence[str], site: Mapping[str, Any] | None
) -> dict[str, Callable[..., Any]]:
    """Resources of a rule whose class is picked per job among ``names`` (an experiment's
    setting). Snakemake fixes a rule's resource names, so those classes must share theirs."""
    resolved = {n: class_resources(n, site) for n in names}
    keysets = {n: frozenset(r) for n, r in resolved.items()}
    if len(set(keysets.values())) > 1:
        raise ConfigError(
            f"resource classes {', '.join(names)} must set the same keys: "
            + "; ".join(f"{n}: {', '.join(sorted(k))}" for n, k in keysets.items())
        )

    def value(key: str) -> Callable[..., Any]:
        def get(wildcards: Any, attempt: int) -> Any:
            item = resolved[choose(wildcards)][key]
            return item(wildcards, attempt) if callable(item) else item

        return get

    return {key: value(key) for key in sorted(keysets[names[0]])}
