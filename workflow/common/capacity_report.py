"""The capacity plan (workflow/common/capacity.py) as people and spreadsheets read it: a
Markdown report and one CSV row per GPU job. Kept apart so the plan arithmetic stays free of
how it is shown.
"""

from __future__ import annotations

import csv
import io

from workflow.common.capacity import ClassLimits, Plan


def _h(hours: float | None) -> str:
    return "-" if hours is None else f"{hours:,.2f}"


def _limit(limits: ClassLimits) -> str:
    first = f"{limits.first_min / 60:g} h"
    return f"{first} (cap {limits.cap_min / 60:g} h)" if limits.cap_min else first


def markdown(plan: Plan) -> str:
    """The plan as Markdown: per track, the jobs over their limits, the budget, what was not
    estimated, and the throughput each estimate used."""
    out = [
        "# Capacity plan",
        "",
        *plan.header,
        f"- device: {plan.device}; retries after a time-out: {plan.retries}",
        "",
    ]
    out += [
        "## Per track",
        "",
        "| track | GPU jobs | estimated | GPU-hours | longest job | its hours | class: "
        "first attempt (cap) | verdict |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for track in plan.tracks():
        rows = [e for e in plan.estimates if e.job.track == track]
        known = [e for e in rows if e.hours is not None]
        longest = max(known, key=lambda e: e.hours, default=None)
        out.append(
            f"| {track} | {len(rows)} | {len(known)} | {sum(e.gpu_hours for e in rows):,.1f} | "
            + (
                f"{longest.job.id} | {_h(longest.hours)} | {longest.job.resource_class}: "
                f"{_limit(longest.limits)} | {longest.verdict(plan.retries)} |"
                if longest
                else "- | - | - | - |"
            )
        )
    out.append(
        f"| **all** | {len(plan.estimates)} | "
        f"{sum(e.hours is not None for e in plan.estimates)} | "
        f"**{plan.gpu_hours:,.1f}** | | | | |"
    )
    flagged = [e for e in plan.estimates if e.hours is not None and e.verdict(plan.retries) != "ok"]
    out += ["", "## Jobs over their class's runtime", ""]
    if flagged:
        out += [
            "| job | class | hours | GPUs | limit: first attempt (cap) | resumable | verdict |",
            "|---|---|---:|---:|---|---|---|",
        ]
        out += [
            f"| {e.job.id} | {e.job.resource_class} | {_h(e.hours)} | {e.limits.gpus} | "
            f"{_limit(e.limits)} | {'yes' if e.job.resumable else 'no'} | "
            f"{e.verdict(plan.retries)} |"
            for e in flagged
        ]
    else:
        out.append("none")
    _, lines = plan.verdict()
    out += ["", "## Budget", "", *(f"- {line}" for line in lines)]
    missing = [e for e in plan.estimates if e.hours is None]
    if missing:
        out += ["", "## Not estimated", ""]
        reasons: dict[tuple[str, str], list[str]] = {}
        for e in missing:
            reasons.setdefault((e.job.rule, e.source), []).append(e.job.id)
        out += [f"- {rule} x{len(ids)}: {why}" for (rule, why), ids in reasons.items()]
    used: dict[tuple[str, str], str] = {}
    for e in plan.estimates:
        if e.hours is not None:
            used.setdefault((e.job.kind, e.source), e.job.id)
    out += ["", "## Throughput used", ""]
    out += [f"- {kind} (e.g. {example}): {source}" for (kind, source), example in used.items()]
    return "\n".join(out) + "\n"


CSV_FIELDS = (
    "track",
    "rule",
    "dataset",
    "experiment",
    "seed",
    "class",
    "gpus",
    "work",
    "unit",
    "hours",
    "gpu_hours",
    "first_attempt_h",
    "cap_h",
    "attempts",
    "resumable",
    "verdict",
    "source",
)


def csv_text(plan: Plan) -> str:
    """One row per GPU job."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for e in plan.estimates:
        j = e.job
        writer.writerow(
            [
                j.track,
                j.rule,
                j.dataset,
                j.experiment or "",
                "" if j.seed is None else j.seed,
                j.resource_class,
                e.limits.gpus,
                "" if j.work is None else int(j.work),
                j.unit,
                "" if e.hours is None else round(e.hours, 4),
                round(e.gpu_hours, 4),
                round(e.limits.first_min / 60, 3),
                "" if e.limits.cap_min is None else round(e.limits.cap_min / 60, 3),
                "" if e.attempts is None else e.attempts,
                "yes" if j.resumable else "no",
                e.verdict(plan.retries),
                e.source,
            ]
        )
    return buffer.getvalue()
