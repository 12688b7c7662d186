"""A capacity plan: how many GPU-hours the config's jobs take, which job outlives its class's
runtime limit, and whether the whole DAG fits a budget of GPUs x hours.

Each track lists its GPU jobs (:class:`Job`: rule, run, resource class, the work it does in
samples, tokens or steps, known from the config and the track's dataset sizes, the same ones
the schedule check uses). A throughput table (``config/throughput.yaml``) says how fast a job
kind runs per GPU on a device, each number either measured (where, on which machine) or an
estimate (how): ``per_s`` units per second per GPU, ``flops_per_unit`` (the rate is then the
device's peak x utilisation / FLOPs), or ``hours_per_job``. DDP scales perfectly here (an
optimistic assumption the plan states). CPU jobs are not planned.

Runtime limits come from the resource map (``runtime`` of the first attempt, ``max_runtime``
the partition's cap; a retry gets ``runtime x attempt``). A job over its limit is flagged; a
training job resumes from its checkpoint in the next attempt, any other job starts over.
The plan is rendered as Markdown and CSV by workflow/common/capacity_report.py.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workflow.common.config import ConfigError
from workflow.common.resources import DISTRIBUTED, class_spec
from workflow.common.sites import ranks

if TYPE_CHECKING:
    from workflow.common.schedule import Schedule

GPU_CLASSES = ("GPU_1", *DISTRIBUTED)
UNITS = ("samples", "tokens", "steps")
RATE_KEYS = ("per_s", "flops_per_unit", "hours_per_job")


@dataclass(frozen=True)
class Job:
    """One GPU job of the DAG: ``work`` units of ``unit`` (None: unknown, ``note`` says why;
    a ``hours_per_job`` throughput needs none), matched to the throughput table by ``kind``
    and ``settings``."""

    track: str
    rule: str
    dataset: str
    experiment: str | None
    seed: int | None
    resource_class: str
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    work: float | None = None
    unit: str = "samples"
    note: str = ""
    resumable: bool = False
    after: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        run = [self.dataset, self.experiment, None if self.seed is None else f"seed{self.seed}"]
        return "/".join([self.rule, *(p for p in run if p is not None)])


def training_job(
    s: Schedule,
    rule: str,
    seed: int | None,
    *,
    kind: str | None = None,
    settings: Mapping[str, Any] | None = None,
    resource_class: str | None = None,
    after: tuple[str, ...] = (),
) -> Job:
    """The job that runs schedule ``s``: the samples its optimiser steps over, resumable from
    its checkpoint; ``kind`` (default: the rule) and ``settings`` (default: the schedule's)
    pick its throughput row, ``resource_class`` (default: the settings' ``resources``) its
    class."""
    settings = s.settings if settings is None else settings
    return Job(
        s.track, rule, s.dataset, s.experiment, seed,
        resource_class or s.settings["resources"], kind or rule, settings,
        s.samples_seen, "samples", s.size.source, resumable=True, after=after,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Throughput table


def _lookup(settings: Mapping[str, Any], dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _matches(want: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    for key, value in want.items():
        have = _lookup(settings, key)
        if isinstance(value, int | float) and isinstance(have, int | float):
            if not math.isclose(float(value), float(have), abs_tol=1e-9):
                return False
        elif have != value:
            return False
    return True


@dataclass(frozen=True)
class Throughput:
    """The table: device name -> its properties, job kind -> entries (first match wins)."""

    devices: Mapping[str, Mapping[str, Any]]
    jobs: Mapping[str, Sequence[Mapping[str, Any]]]
    default_device: str
    budget: Mapping[str, Any] = field(default_factory=dict)  # gpus, hours: the default budget

    def entry(self, job: Job, device: str) -> Mapping[str, Any] | None:
        for entry in self.jobs.get(job.kind, ()):
            if entry["device"] == device and _matches(entry.get("match", {}), job.settings):
                return entry
        return None

    def rate(self, entry: Mapping[str, Any]) -> float:
        """Units per second per GPU of an entry with ``per_s`` or ``flops_per_unit``."""
        if "per_s" in entry:
            return float(entry["per_s"])
        device = self.devices[entry["device"]]
        peak = float(device["peak_tflops"]) * 1e12 * float(device["utilisation"])
        return peak / float(entry["flops_per_unit"])


def load_throughput(table: Mapping[str, Any], where: str = "throughput table") -> Throughput:
    """Check the table (every entry names one rate and says where it comes from) or raise
    ``ConfigError`` naming the entry."""
    devices = table.get("devices") or {}
    jobs = table.get("jobs") or {}
    problems = []
    for kind, entries in jobs.items():
        for i, entry in enumerate(entries or []):
            at = f"{where}: jobs.{kind}[{i}]"
            rates = [k for k in RATE_KEYS if k in entry]
            if len(rates) != 1:
                problems.append(f"{at}: needs exactly one of {', '.join(RATE_KEYS)}")
            if ("measured" in entry) == ("estimate" in entry):
                problems.append(
                    f"{at}: needs `measured` (where, which machine) or `estimate` (how)"
                )
            if entry.get("device") not in devices:
                problems.append(f"{at}: device {entry.get('device')!r} is not in `devices`")
            elif "flops_per_unit" in entry and not {"peak_tflops", "utilisation"} <= set(
                devices[entry["device"]]
            ):
                problems.append(
                    f"{at}: flops_per_unit needs the device's peak_tflops and utilisation"
                )
            if entry.get("unit", "samples") not in UNITS:
                problems.append(f"{at}: unit must be one of {', '.join(UNITS)}")
    default = table.get("device")
    if default not in devices:
        problems.append(f"{where}: device {default!r} is not in `devices`")
    budget = table.get("budget") or {}
    if set(budget) - {"gpus", "hours"}:
        problems.append(f"{where}: budget takes gpus and hours only")
    if problems:
        raise ConfigError("\n  ".join(problems))
    return Throughput(devices, jobs, default, budget)


# ---------------------------------------------------------------------------------------------
# Resource classes


@dataclass(frozen=True)
class ClassLimits:
    gpus: int  # GPUs the job holds (1 where the site gives none: a local device)
    processes: int  # DDP processes (each at the per-GPU rate)
    first_min: float  # runtime of the first attempt
    cap_min: float | None  # max_runtime (None: no cap)


def class_limits(name: str, site: Mapping[str, Any] | None) -> ClassLimits:
    """What class ``name`` holds and how long it may run, from the site map (or the local
    classes)."""
    raw = class_spec(name, site)
    if not raw:
        raise ConfigError(f"the resource map has no class {name}")
    processes = ranks(raw)
    gpus = int(raw.get("gpus") or 0) * int(raw.get("nodes") or 1)
    cap = raw.get("max_runtime")
    return ClassLimits(
        max(gpus, 1), processes, float(raw["runtime"]), None if cap is None else float(cap)
    )


def attempts_needed(minutes: float, limits: ClassLimits, resumable: bool) -> int | None:
    """Attempts until the job is done (attempt k may run ``min(runtime x k, cap)``): summed
    for a job that resumes, the one long enough for a job that starts over; None if no
    attempt ever is (a job that starts over and needs more than the cap)."""

    def allowed(k: int) -> float:
        run = limits.first_min * k
        return min(run, limits.cap_min) if limits.cap_min else run

    if not resumable:
        if limits.cap_min is not None and minutes > limits.cap_min:
            return None
        return max(math.ceil(minutes / limits.first_min), 1)
    done, k = 0.0, 0
    while done < minutes:
        k += 1
        done += allowed(k)
    return max(k, 1)


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Estimate:
    job: Job
    limits: ClassLimits
    hours: float | None  # wall hours of the job (None: not estimated)
    source: str  # the throughput entry's measured / estimate text, or why not estimated
    attempts: int | None = None  # None with hours: cannot finish

    @property
    def gpu_hours(self) -> float:
        return (self.hours or 0.0) * self.limits.gpus

    @property
    def over_limit(self) -> bool:
        limit = self.limits.cap_min or self.limits.first_min
        return self.hours is not None and self.hours * 60 > limit

    def verdict(self, retries: int) -> str:
        if self.hours is None:
            return "not estimated"
        if self.attempts is None:
            return "CANNOT FINISH: over the limit and cannot resume mid-run"
        if self.attempts > retries + 1:
            return (
                f"CANNOT FINISH: needs {self.attempts} attempts, the profile allows {retries + 1}"
            )
        if self.over_limit:
            return f"over the limit: resumes, {self.attempts} attempts"
        if self.attempts > 1:
            return f"over the first attempt: {self.attempts} attempts"
        return "ok"


def estimate(job: Job, table: Throughput, device: str, site: Mapping[str, Any] | None) -> Estimate:
    limits = class_limits(job.resource_class, site)
    entry = table.entry(job, device)
    if entry is None:
        return Estimate(
            job,
            limits,
            None,
            f"no {device} throughput for {job.kind} with these settings in the table",
        )
    source = str(entry.get("measured") or entry.get("estimate"))
    if "hours_per_job" in entry:
        hours = float(entry["hours_per_job"])
    elif job.work is None:
        return Estimate(job, limits, None, job.note or "work unknown")
    else:
        if entry.get("unit", "samples") != job.unit:
            raise ConfigError(
                f"throughput of {job.kind} is per {entry.get('unit', 'samples')}, "
                f"the job counts {job.unit}"
            )
        seconds = float(job.work) / (table.rate(entry) * limits.processes)
        hours = (seconds + float(entry.get("startup_s", 0))) / 3600
    return Estimate(job, limits, hours, source, attempts_needed(hours * 60, limits, job.resumable))


def wall_time(estimates: Sequence[Estimate], gpus: int) -> tuple[float, list[str]]:
    """Hours until every estimated job is done on ``gpus`` GPUs, each job started as soon as
    the jobs it waits for are done and its GPUs are free (longest chain first); and the jobs
    that never fit. Queue waits and the unestimated jobs are not counted: a lower bound."""
    known = {e.job.id: e for e in estimates if e.hours is not None}
    tail: dict[str, float] = {}

    def chain(job_id: str) -> float:  # the job's hours plus the longest chain after it
        if job_id not in tail:
            after = [chain(j) for j, e in known.items() if job_id in e.job.after]
            tail[job_id] = known[job_id].hours + max(after, default=0.0)
        return tail[job_id]

    pending = sorted(known, key=lambda j: -chain(j))
    too_big = [j for j in pending if known[j].limits.gpus > gpus]
    pending = [j for j in pending if j not in too_big]
    done: set[str] = set()
    running: list[tuple[float, str]] = []
    now, free = 0.0, gpus
    while pending or running:
        for job_id in list(pending):
            e = known[job_id]
            waits = [d for d in e.job.after if d in known and d not in done]
            if not waits and e.limits.gpus <= free:
                pending.remove(job_id)
                free -= e.limits.gpus
                heapq.heappush(running, (now + e.hours, job_id))
        if not running:
            too_big += pending  # waiting on a job that never runs
            break
        now, job_id = heapq.heappop(running)
        free += known[job_id].limits.gpus
        done.add(job_id)
    return now, too_big


@dataclass
class Plan:
    estimates: list[Estimate]
    device: str
    retries: int
    budget_gpus: int | None = None
    budget_hours: float | None = None
    header: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return sum(e.gpu_hours for e in self.estimates)

    def tracks(self) -> list[str]:
        return list(dict.fromkeys(e.job.track for e in self.estimates))

    def verdict(self) -> tuple[bool | None, list[str]]:
        """(fits, lines): GPU-hours against GPUs x hours, and the wall time on those GPUs."""
        if not self.budget_gpus or not self.budget_hours:
            return None, ["no budget given (--budget-gpus, --budget-hours)"]
        capacity = self.budget_gpus * self.budget_hours
        hours, stuck = wall_time(self.estimates, self.budget_gpus)
        fits_hours = self.gpu_hours <= capacity
        fits_wall = hours <= self.budget_hours and not stuck
        unknown = sum(e.hours is None for e in self.estimates)
        lines = [
            f"GPU-hours: {self.gpu_hours:,.1f} of {capacity:,.0f} "
            f"({self.budget_gpus} GPUs x {self.budget_hours:g} h): "
            + ("fits" if fits_hours else "DOES NOT FIT"),
            f"wall time with {self.budget_gpus} GPUs (jobs in parallel, dependencies kept, "
            f"longest chain first, no queue waits): {hours:,.1f} h of {self.budget_hours:g} h: "
            + ("fits" if fits_wall else "DOES NOT FIT"),
        ]
        if stuck:
            lines.append(f"{len(stuck)} job(s) need more GPUs than the budget: {', '.join(stuck)}")
        if unknown:
            lines.append(
                f"{unknown} GPU job(s) not estimated (listed below): the totals are lower bounds"
            )
        fits = fits_hours and fits_wall
        lines.append("verdict: " + ("FITS the budget" if fits else "DOES NOT FIT the budget"))
        return fits, lines


def make_plan(
    jobs: Iterable[Job],
    table: Throughput,
    site: Mapping[str, Any] | None,
    device: str | None = None,
    retries: int = 0,
    budget_gpus: int | None = None,
    budget_hours: float | None = None,
) -> Plan:
    device = device or table.default_device
    if device not in table.devices:
        raise ConfigError(
            f"device {device!r} is not in the throughput table (known: {', '.join(table.devices)})"
        )
    estimates = [estimate(job, table, device, site) for job in jobs]
    return Plan(estimates, device, retries, budget_gpus, budget_hours)
