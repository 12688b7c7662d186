# The comparison report: one table over every track's metrics.json files; with groups
# (--config group=alice,bob), their runs and the baselines' in a report of their own
# (REPORT, set in the Snakefile).


rule report:
    input:
        [f"{run.folder}/metrics.json" for track in config["tracks"] for run in report_runs(track)],
    output:
        csv=report(f"{REPORT}/summary.csv", category="summary", caption="../report/summary.rst"),
        md=report(f"{REPORT}/summary.md", category="summary", caption="../report/summary.rst"),
    params:
        baselines=[
            arg
            for track, baseline in config["baselines"].items()
            if track in config["tracks"] and baseline
            for arg in ("--baseline", f"{track}={baseline}")
        ],
    log:
        f"logs/{REPORT.removeprefix('results/')}/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/report.py --metrics {input:q} {params.baselines:q} "
        "--csv {output.csv:q} --md {output.md:q} > {log:q} 2>&1"
