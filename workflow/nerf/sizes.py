"""The NeRF track's GPU jobs for the capacity plan (workflow/common/capacity.py): one training
job per run, its length fixed by the config (no dataset size needed) - the builtin engine's
``max_epochs`` x ``steps_per_epoch`` steps, nerfstudio's ``max_num_iterations``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow.common.capacity import Job
from workflow.common.experiments import run_settings, runs


def capacity_jobs(config: Mapping[str, Any], site: Mapping[str, Any] | None = None) -> list[Job]:
    jobs = []
    for run in runs(config, "nerf"):
        s = run_settings(config["nerf"], run.experiment)
        if s.get("engine", "builtin") == "nerfstudio":
            rule, steps = "nerf_train_nerfstudio", int(s["nerfstudio"]["max_num_iterations"])
            note = "nerfstudio.max_num_iterations"
        else:
            rule, steps = "nerf_train", int(s["max_epochs"]) * int(s["steps_per_epoch"])
            note = "max_epochs x steps_per_epoch"
        jobs.append(
            Job(
                "nerf",
                rule,
                run.dataset,
                run.experiment,
                run.seed,
                s.get("resources", "GPU_1"),
                rule,
                s,
                steps,
                "steps",
                note,
                resumable=True,
            )
        )
    return jobs
