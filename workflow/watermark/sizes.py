"""Training size of the demo LM (rule watermark_lm), known when the workflow is parsed: for the
schedule check (workflow/common/schedule.py); and the track's GPU jobs for the capacity plan
(workflow/common/capacity.py). Real models are read as they are, never trained.

The LM trains on ``lm.documents`` generated documents less the held-out ``val_fraction``,
joined and cut into ``block_size`` token blocks. The token count is only known after the
tokenizer is trained, so it is estimated at the low end of the generator's documents
(``TOKENS_PER_DOCUMENT``): the run is never taken for longer than it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow.common.capacity import Job, training_job
from workflow.common.config import schema_defaults
from workflow.common.experiments import run_settings, runs
from workflow.common.schedule import Schedule, Size

#: Fewest tokens of a generated document under the demo's tokenizer (workflow/watermark/
#: corpus.py ``LENGTH``: 330-500 tokens).
TOKENS_PER_DOCUMENT = 330
#: The schema's ``watermark.lm`` defaults (what workflow/watermark/lm.py trains with).
LM_DEFAULTS: dict[str, Any] = schema_defaults("watermark_lm")


def lm_size(lm: Mapping[str, Any]) -> Size:
    """Training blocks of the demo LM trained with the ``lm`` section ``lm``."""
    s = {**LM_DEFAULTS, **dict(lm)}
    documents = int(s["documents"])
    held_out = min(max(1, round(float(s["val_fraction"]) * documents)), documents - 1)
    blocks = (documents - held_out) * TOKENS_PER_DOCUMENT // int(s["block_size"])
    return Size(blocks, f"{documents - held_out} documents x {TOKENS_PER_DOCUMENT} tokens")


def used_models(track_config: Mapping[str, Any]) -> set[str]:
    """Models a job reads: the experiments', the oracle and the paraphraser."""
    named = {run_settings(track_config, e).get("model") for e in track_config["experiments"]}
    named |= {track_config.get("oracle"), track_config.get("paraphrase", {}).get("model")}
    return {m for m in named if m}


def schedules(config: Mapping[str, Any], site: Mapping[str, Any] | None = None) -> list[Schedule]:
    """The demo LM's schedule for every ``demo: true`` model a job reads (none: nothing is
    trained)."""
    track_config = config["watermark"]
    s = {**LM_DEFAULTS, **dict(track_config.get("lm", {}))}
    size = lm_size(s)
    used = used_models(track_config)
    return [
        Schedule(
            "watermark",
            "generated documents",
            name,
            "lm",
            size,
            int(s["batch_size"]),
            int(s["max_epochs"]),
            s,
        )
        for name, entry in track_config["models"].items()
        if entry.get("demo") and name in used
    ]


def capacity_jobs(config: Mapping[str, Any], site: Mapping[str, Any] | None = None) -> list[Job]:
    """The GPU jobs: the demo LM per demo model; per run the generation (``prompts.n`` x
    ``new_tokens`` tokens), the paraphrase attack (with ``paraphrase.model``) and the oracle's
    perplexity in the evaluation (with ``oracle``)."""
    track_config = config["watermark"]
    jobs = [
        training_job(s, "watermark_lm", None, resource_class="GPU_1")
        for s in schedules(config, site)
    ]
    prompts = int(track_config.get("prompts", {}).get("n", 500))
    paraphraser = track_config.get("paraphrase", {}).get("model")
    oracle = track_config.get("oracle")
    for run in runs(config, "watermark"):
        s = run_settings(track_config, run.experiment)
        tokens = prompts * int(s.get("new_tokens", 200))
        generate = Job(
            "watermark",
            "watermark_generate",
            run.dataset,
            run.experiment,
            run.seed,
            "GPU_1",
            "watermark_generate",
            s,
            tokens,
            "tokens",
            f"{prompts} prompts x {s.get('new_tokens', 200)} tokens",
        )
        jobs.append(generate)
        for rule, model in (("watermark_paraphrase", paraphraser), ("watermark_evaluate", oracle)):
            if model:
                jobs.append(
                    Job(
                        "watermark",
                        rule,
                        run.dataset,
                        run.experiment,
                        run.seed,
                        "GPU_1",
                        rule,
                        {"model": model},
                        after=(generate.id,),
                    )
                )
    return jobs
