# The capacity plan of this config on this site: GPU-hours per track, the jobs over their
# resource class's runtime, and whether the DAG fits the budget (scripts/capacity.py; the
# logic lives in workflow/common/capacity.py). Not part of `all`:
#   snakemake capacity --profile profiles/leonardo --configfile config/leonardo.yaml


rule capacity:
    """The capacity plan: results/capacity/plan.md (and one CSV row per GPU job)."""
    input:
        throughput="config/throughput.yaml",
    output:
        md="results/capacity/plan.md",
        csv="results/capacity/plan.csv",
    params:
        config=lambda wc: as_json(config),  # as the workflow has it: overlays, --config
        maps=config.get("resource_maps") or [],
        retries=lambda wc: getattr(workflow.execution_settings, "retries", 0) or 0,  # --retries
    log:
        "logs/capacity/plan.log",
    conda:
        "../envs/capacity.yaml"
    localrule: True  # seconds of reading the config: no job of its own on a cluster
    default_target: False
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/capacity.py --config-json {params.config:q} "
        "--resource-map {params.maps:q} --retries {params.retries:q} "
        "--throughput {input.throughput:q} --md {output.md:q} --csv {output.csv:q} "
        "> {log:q} 2>&1"
