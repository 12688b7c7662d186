"""Schedulers: what a resource class's generic needs become in each scheduler's own words.

A resource map (``profiles/<site>/resources.yaml``) describes each class in generic keys
(:data:`GENERIC`) and names its ``scheduler``; this module turns those into the resources the
scheduler's Snakemake executor plugin reads, and into the launch of a multi-process (DDP)
training run. Any other key of a class is the plugin's own (``slurm_partition``, ``qos``,
``lsf_queue``, ``universe``, ...) and passes through unchanged. Rules never see the difference:
they ask for a class and run ``{params.launch} python ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workflow.common.config import ConfigError

#: What a class may say whatever the scheduler: GPUs per node, DDP shape (``nodes``,
#: ``tasks_per_node`` = ranks per node), cores per rank, memory, time, scratch, account.
GENERIC = (
    "gpus",
    "nodes",
    "tasks_per_node",
    "cpus_per_task",
    "mem_mb",
    "runtime",
    "max_runtime",
    "disk_mb",
    "account",
)

#: Plugin resources this module writes itself from the generic keys: a map that sets one of
#: them directly would be overwritten or disagree with the launch, so it is refused.
DERIVED = {
    "slurm": ("gpu", "gres", "mpi", "slurm_account", "tasks_per_gpu", "tasks"),
    "lsf": ("lsf_project", "mpi"),
    "htcondor": (
        "request_gpus",
        "request_memory",
        "request_disk",
        "htcondor_request_mem_mb",
        "htcondor_request_disk_mb",
        "htcondor_submit_accounting_group",
    ),
    "kubernetes": ("gpu",),
    "local": ("gpu",),
}
SCHEDULERS = tuple(DERIVED)


def is_distributed(spec: Mapping[str, Any]) -> bool:
    """A DDP class: its jobs start one process per rank (``tasks_per_node`` set)."""
    return spec.get("tasks_per_node") is not None


def ranks(spec: Mapping[str, Any]) -> int:
    """DDP processes of a job of this class (1 for a one-process class)."""
    if not is_distributed(spec):
        return 1
    return max(int(spec["tasks_per_node"]) * int(spec.get("nodes") or 1), 1)


def devices_per_node(spec: Mapping[str, Any]) -> int:
    """Lightning's ``devices``: the ranks per node of a DDP class, else the GPUs (0: CPU)."""
    if is_distributed(spec):
        return int(spec["tasks_per_node"])
    return int(spec.get("gpus") or 0)


def check_class(scheduler: str, name: str, spec: Mapping[str, Any], where: str) -> None:
    """Refuse what the scheduler cannot do and keys this module derives itself."""
    clash = sorted(set(spec) & set(DERIVED[scheduler]))
    if clash:
        raise ConfigError(
            f"{where}: class {name} sets {', '.join(clash)}, which the site layer derives "
            "from gpus, nodes, tasks_per_node, cpus_per_task, mem_mb and account: set those"
        )
    for key in ("gpus", "nodes", "tasks_per_node", "cpus_per_task", "mem_mb", "runtime"):
        value = spec.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ConfigError(
                f"{where}: class {name}: {key} must be a whole number >= 0, not {value!r}"
            )
    if scheduler in ("lsf", "htcondor", "kubernetes") and int(spec.get("nodes") or 1) > 1:
        raise ConfigError(
            f"{where}: class {name} asks for {spec['nodes']} nodes, but on {scheduler} a DDP run "
            "is torchrun on one host: set nodes: 1"
        )


def _passthrough(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if key not in GENERIC}


def _cores(spec: Mapping[str, Any]) -> int:
    """Cores of the whole job where one launcher process holds them all (torchrun)."""
    return int(spec.get("cpus_per_task") or 1) * ranks(spec)


def _slurm(spec: Mapping[str, Any]) -> dict[str, Any]:
    resources = {**_passthrough(spec), "cpus_per_task": spec.get("cpus_per_task")}
    if spec.get("account"):
        resources["slurm_account"] = spec["account"]
    gpus = int(spec.get("gpus") or 0)
    if is_distributed(spec):
        # the job step runs unwrapped and starts its ranks with srun (the launch)
        resources |= {"mpi": "srun", "nodes": int(spec.get("nodes") or 1)}
        resources |= {"tasks_per_node": int(spec["tasks_per_node"]), "tasks_per_gpu": 0}
        if gpus:
            resources["gres"] = f"gpu:{gpus}"
    elif gpus:
        # one process sees every GPU (plugins < 2.7.1 default to one task per GPU)
        resources |= {"gpu": gpus, "tasks_per_gpu": 0}
    return resources


def _lsf(spec: Mapping[str, Any]) -> dict[str, Any]:
    resources = {**_passthrough(spec), "cpus_per_task": _cores(spec)}
    if spec.get("account"):
        resources["lsf_project"] = spec["account"]
    gpus = int(spec.get("gpus") or 0)
    if gpus:
        extra = f'-gpu "num={gpus}:mode=exclusive_process"'
        own = spec.get("lsf_extra")
        resources["lsf_extra"] = f"{extra} {own}" if own else extra
    return resources


def _htcondor(spec: Mapping[str, Any]) -> dict[str, Any]:
    # request_cpus: the plugin (0.3.0) sets it from the rule's threads and lets nothing override
    resources = _passthrough(spec)
    if spec.get("mem_mb") is not None:
        resources["htcondor_request_mem_mb"] = int(spec["mem_mb"])
    if spec.get("disk_mb") is not None:
        resources["htcondor_request_disk_mb"] = int(spec["disk_mb"])
    if spec.get("account"):
        resources["htcondor_submit_accounting_group"] = spec["account"]
    gpus = int(spec.get("gpus") or 0)
    if gpus:
        resources["request_gpus"] = gpus
    return resources


def _kubernetes(spec: Mapping[str, Any]) -> dict[str, Any]:
    resources = _passthrough(spec)
    gpus = int(spec.get("gpus") or 0)
    if gpus:
        resources |= {"gpu": gpus, "gpu_manufacturer": spec.get("gpu_manufacturer", "nvidia")}
    return resources


def _local(spec: Mapping[str, Any]) -> dict[str, Any]:
    resources = {**_passthrough(spec), "cpus_per_task": spec.get("cpus_per_task")}
    if "gpus" in spec:
        resources["gpu"] = int(spec.get("gpus") or 0)  # `--resources gpu=N` limits them
    return resources


_ADAPTERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "slurm": _slurm,
    "lsf": _lsf,
    "htcondor": _htcondor,
    "kubernetes": _kubernetes,
    "local": _local,
}


def scheduler_resources(scheduler: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The plugin's resources of a class (``mem_mb``, ``runtime``, ``max_runtime``,
    ``disk_mb`` are added by the caller): ``spec`` is the class in generic keys."""
    resources = _ADAPTERS[scheduler](spec)
    return {key: value for key, value in resources.items() if value is not None}


def launch(scheduler: str, spec: Mapping[str, Any], contained: bool = False) -> str:
    """The command prefix that starts a training run's processes: empty for one process;
    srun on SLURM (the plugin's job step strips the allocation's SLURM_* variables, so srun is
    told the layout again, and its cores per task: Lightning checks SLURM_NTASKS_PER_NODE);
    torchrun on one host elsewhere (Lightning reads torchrun's environment), and on SLURM too
    when the job runs in the image (``contained``), which has no srun."""
    if not is_distributed(spec) or ranks(spec) == 1:
        return ""
    tasks, nodes = int(spec["tasks_per_node"]), int(spec.get("nodes") or 1)
    if scheduler == "slurm" and not contained:
        cpus = int(spec.get("cpus_per_task") or 1)
        return f"export SRUN_CPUS_PER_TASK={cpus}; srun --nodes={nodes} --ntasks-per-node={tasks}"
    if nodes > 1:
        raise ConfigError(
            f"a DDP run over {nodes} nodes needs srun, which the image does not have: run it "
            "without --sdm apptainer, or on one node"
        )
    return f"torchrun --standalone --nnodes=1 --nproc-per-node={tasks}"
