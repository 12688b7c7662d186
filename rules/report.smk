# The comparison report: one table over every track's metrics.json files.


rule report:
    input:
        [f"{run.folder}/metrics.json" for track in config["tracks"] for run in track_runs(track)],
    output:
        csv=report(
            "results/report/summary.csv", category="summary", caption="../report/summary.rst"
        ),
        md=report(
            "results/report/summary.md", category="summary", caption="../report/summary.rst"
        ),
    params:
        baselines=" ".join(
            "--baseline " + shlex.quote(f"{track}={baseline}")
            for track, baseline in config["baselines"].items()
            if track in config["tracks"] and baseline
        ),
    log:
        "logs/report/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/report.py --metrics {input:q} {params.baselines} "
        "--csv {output.csv:q} --md {output.md:q} > {log:q} 2>&1"
