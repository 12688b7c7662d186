# Gene and protein expression from sequence: demo -> encode -> train -> evaluate -> figures.
# Every rule calls `python scripts/sequence.py <stage>`; the logic lives in workflow/sequence.

from workflow.common.schedule import check_schedules, report_unchecked
from workflow.sequence.sizes import schedules as sequence_schedules
from workflow.sequence.sources import encode_args

SEQ_ENV = "../envs/sequence.yaml"
SEQ = config["sequence"]
ENCODED = "results/sequence/{dataset}/prep/encoded"

if workflow.is_main_process:  # once per run: every warm-up ends before its run does
    try:
        report_unchecked(check_schedules(sequence_schedules(config, SITE)), sys.stderr)
    except ConfigError as err:
        sys.exit(f"error: {err}")


rule sequence_demo:
    output:
        "data/demo/sequence/{dataset}/manifest.json",
    params:
        settings=lambda wc: as_json(SEQ["demo"]),
    log:
        "logs/sequence_demo/{dataset}.log",
    benchmark:
        "benchmarks/sequence_demo/{dataset}.tsv"
    conda:
        SEQ_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/sequence.py demo --root \"$(dirname {output:q})\" "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule sequence_encode:
    input:
        lambda wc: dataset_inputs("sequence", wc.dataset),
    output:
        train=f"{ENCODED}/train.h5",
        val=f"{ENCODED}/valid.h5",
        test=f"{ENCODED}/test.h5",
        skipped=f"{ENCODED}/skipped.tsv",
    params:
        sources=lambda wc: encode_args(SEQ, wc.dataset),
        settings=lambda wc: as_json(SEQ["encode"]),
        policy=SEQ["on_bad_sample"],
    log:
        "logs/sequence_encode/{dataset}.log",
    benchmark:
        "benchmarks/sequence_encode/{dataset}.tsv"
    conda:
        SEQ_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/sequence.py encode {params.sources:q} --out \"$(dirname {output.train:q})\" "
        "--skipped {output.skipped:q} --settings {params.settings:q} "
        "--on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule sequence_train:
    input:
        f"{ENCODED}/train.h5",
        f"{ENCODED}/valid.h5",
        variant=variant_inputs("sequence"),
    output:
        "results/sequence/{dataset}/{experiment}/seed{seed}/final.ckpt",
    wildcard_constraints:
        experiment=experiments_matching("sequence", lambda s: s["resources"] == "GPU_1"),
    params:
        settings=lambda wc: settings_of("sequence", wc.experiment),
        encoded=lambda wc: ENCODED.format(dataset=wc.dataset),
        run_dir="results/sequence/{dataset}/{experiment}/seed{seed}/run",  # undeclared: resumable checkpoints survive a rerun
        launch=run_launch("sequence"),
        devices=run_devices("sequence"),
        nodes=run_nodes("sequence"),
    log:
        "logs/sequence_train/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/sequence_train/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        SEQ_ENV
    # one torch thread: half a step is data reading and bookkeeping, so on a laptop two runs side
    # by side train ~1.5x faster than one run on two threads (SLURM jobs get cpus_per_task)
    threads: 1
    resources:
        **resource_class("GPU_1"),
    shell:
        "{params.launch} python scripts/sequence.py train --settings {params.settings:q} "
        "--encoded {params.encoded:q} --run-dir {params.run_dir:q} --out {output:q} "
        "--seed {wildcards.seed:q} --devices {params.devices:q} --num-nodes {params.nodes:q} "
        "> {log:q} 2>&1"


use rule sequence_train as sequence_train_ddp with:
    wildcard_constraints:
        experiment=experiments_matching("sequence", lambda s: s["resources"] in DISTRIBUTED),
    resources:
        **experiment_resources("sequence", DISTRIBUTED),


rule sequence_evaluate:
    input:
        checkpoint="results/sequence/{dataset}/{experiment}/seed{seed}/final.ckpt",
        test=f"{ENCODED}/test.h5",
        variant=variant_inputs("sequence"),
    output:
        metrics="results/sequence/{dataset}/{experiment}/seed{seed}/metrics.json",
        predictions="results/sequence/{dataset}/{experiment}/seed{seed}/predictions.parquet",
    params:
        settings=lambda wc: settings_of("sequence", wc.experiment),
        encoded=lambda wc: ENCODED.format(dataset=wc.dataset),
    log:
        "logs/sequence_evaluate/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/sequence_evaluate/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        SEQ_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/sequence.py evaluate --checkpoint {input.checkpoint:q} "
        "--encoded {params.encoded:q} --metrics {output.metrics:q} "
        "--predictions {output.predictions:q} --dataset {wildcards.dataset:q} "
        "--experiment {wildcards.experiment:q} --seed {wildcards.seed:q} "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule sequence_figures:
    input:
        predictions=lambda wc: [
            f"{run.folder}/predictions.parquet" for run in dataset_runs("sequence", wc.dataset)
        ],
        manifest=lambda wc: dataset_inputs("sequence", wc.dataset),
    output:
        report(
            "results/sequence/{dataset}/figures/scatter.png",
            category="sequence",
            subcategory="{dataset}",
            caption="../report/sequence_scatter.rst",
        ),
    params:
        manifest=lambda wc, input: ["--manifest", input.manifest] if input.manifest else [],
    log:
        "logs/sequence_figures/{dataset}.log",
    conda:
        SEQ_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/sequence.py figures --predictions {input.predictions:q} "
        "{params.manifest:q} --scatter {output:q} > {log:q} 2>&1"


rule sequence:
    """All runs and figures of the sequence track."""
    input:
        [f"{run.folder}/metrics.json" for run in track_runs("sequence")],
        expand(
            "results/sequence/{dataset}/figures/scatter.png",
            dataset=enabled_datasets("sequence", SEQ),
        ),
    default_target: False
