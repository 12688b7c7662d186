# FLIP on img2dataset shards: demo -> hash (per shard group) -> dedup (per bucket) -> filter
# (per shard group) -> pretrain (masked) -> tune (unmasked) -> evaluate (zero-shot, linear
# probe) -> figures.
# Every rule calls `python scripts/flip.py <stage>`; the logic lives in workflow/flip.

from workflow.common.schedule import check_schedules, report_unchecked
from workflow.flip.sizes import schedules as flip_schedules
from workflow.flip.sources import (
    DUPLICATES,
    FILTERED,
    HASHES,
    check_models,
    dataset_profile,
    duplicate_tables,
    filtered_folders,
    hash_tables,
    input_groups,
    val_folder,
)

FLIP_ENV = "../envs/flip.yaml"
FLIP = config["flip"]
FLIP_RUN = "results/flip/{dataset}/{experiment}/seed{seed}"

if workflow.is_main_process:  # once per run, not again in every job (open_clip takes seconds)
    try:
        check_models(FLIP)
        report_unchecked(check_schedules(flip_schedules(config, SITE)), sys.stderr)
    except ConfigError as err:
        sys.exit(f"error: {err}")


wildcard_constraints:
    group=r"\d+",


rule flip_demo:
    output:
        "data/demo/flip/{dataset}/manifest.json",
    params:
        settings=lambda wc: as_json(FLIP["demo"]),
    log:
        "logs/flip_demo/{dataset}.log",
    benchmark:
        "benchmarks/flip_demo/{dataset}.tsv"
    conda:
        FLIP_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/flip.py demo --root \"$(dirname {output:q})\" "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule flip_hash:
    input:
        lambda wc: dataset_inputs("flip", wc.dataset),
    output:
        HASHES,
    params:
        shards=lambda wc: input_groups(FLIP, wc.dataset)[int(wc.group)],
        settings=lambda wc: as_json(FLIP["filter"]),
        profile=lambda wc: dataset_profile(FLIP, wc.dataset),
    log:
        "logs/flip_hash/{dataset}_group{group}.log",
    benchmark:
        "benchmarks/flip_hash/{dataset}_group{group}.tsv"
    conda:
        FLIP_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/flip.py hash --shards {params.shards:q} --out {output:q} "
        "--settings {params.settings:q} --profile {params.profile:q} > {log:q} 2>&1"


rule flip_dedup:
    """One job per bucket of filter.dedup_buckets: its memory is its share of the dataset."""
    input:
        lambda wc: hash_tables(FLIP, wc.dataset),
    output:
        DUPLICATES,
    wildcard_constraints:
        bucket=r"\d+",
    log:
        "logs/flip_dedup/{dataset}_bucket{bucket}.log",
    benchmark:
        "benchmarks/flip_dedup/{dataset}_bucket{bucket}.tsv"
    conda:
        FLIP_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/flip.py dedup --hashes {input:q} --bucket {wildcards.bucket:q} "
        "--out {output:q} > {log:q} 2>&1"


rule flip_filter:
    input:
        data=lambda wc: dataset_inputs("flip", wc.dataset),
        duplicates=lambda wc: duplicate_tables(FLIP, wc.dataset),
    output:
        directory(FILTERED),
    params:
        shards=lambda wc: input_groups(FLIP, wc.dataset)[int(wc.group)],
        settings=lambda wc: as_json(FLIP["filter"]),
        profile=lambda wc: dataset_profile(FLIP, wc.dataset),
        policy=FLIP["on_bad_sample"],
    log:
        "logs/flip_filter/{dataset}_group{group}.log",
    benchmark:
        "benchmarks/flip_filter/{dataset}_group{group}.tsv"
    conda:
        FLIP_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/flip.py filter --shards {params.shards:q} --out {output:q} "
        "--duplicates {input.duplicates:q} --settings {params.settings:q} "
        "--profile {params.profile:q} --on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule flip_pretrain:
    input:
        filtered=lambda wc: filtered_folders(FLIP, wc.dataset),
        variant=variant_inputs("flip"),
    output:
        f"{FLIP_RUN}/pretrained.ckpt",
    wildcard_constraints:
        experiment=experiments_matching("flip", lambda s: s["resources"] == "GPU_1"),
    params:
        settings=lambda wc: settings_of("flip", wc.experiment),
        run_dir=f"{FLIP_RUN}/pretrain_run",  # undeclared: resumable checkpoints survive a rerun
        launch=run_launch("flip"),
        devices=run_devices("flip"),
        nodes=run_nodes("flip"),
    log:
        "logs/flip_pretrain/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/flip_pretrain/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        FLIP_ENV
    threads: 1
    resources:
        **resource_class("GPU_1"),
    shell:
        "{params.launch} python scripts/flip.py train --settings {params.settings:q} "
        "--filtered {input.filtered:q} --run-dir {params.run_dir:q} --out {output:q} "
        "--seed {wildcards.seed:q} --devices {params.devices:q} --num-nodes {params.nodes:q} "
        "> {log:q} 2>&1"


use rule flip_pretrain as flip_pretrain_ddp with:
    wildcard_constraints:
        experiment=experiments_matching("flip", lambda s: s["resources"] in DISTRIBUTED),
    resources:
        **experiment_resources("flip", DISTRIBUTED),


rule flip_tune:
    input:
        pretrained=f"{FLIP_RUN}/pretrained.ckpt",
        filtered=lambda wc: filtered_folders(FLIP, wc.dataset),
        variant=variant_inputs("flip"),
    output:
        f"{FLIP_RUN}/final.ckpt",
    wildcard_constraints:
        experiment=experiments_matching("flip", lambda s: s["resources"] == "GPU_1"),
    params:
        settings=lambda wc: settings_of("flip", wc.experiment),
        tune=as_json(FLIP["tune"]),
        run_dir=f"{FLIP_RUN}/tune_run",
        launch=run_launch("flip"),
        devices=run_devices("flip"),
        nodes=run_nodes("flip"),
    log:
        "logs/flip_tune/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/flip_tune/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        FLIP_ENV
    threads: 1
    resources:
        **resource_class("GPU_1"),
    shell:
        "{params.launch} python scripts/flip.py train --settings {params.settings:q} "
        "--filtered {input.filtered:q} --init {input.pretrained:q} --tune {params.tune:q} "
        "--run-dir {params.run_dir:q} --out {output:q} --seed {wildcards.seed:q} "
        "--devices {params.devices:q} --num-nodes {params.nodes:q} > {log:q} 2>&1"


use rule flip_tune as flip_tune_ddp with:
    wildcard_constraints:
        experiment=experiments_matching("flip", lambda s: s["resources"] in DISTRIBUTED),
    resources:
        **experiment_resources("flip", DISTRIBUTED),


rule flip_evaluate:
    input:
        checkpoint=f"{FLIP_RUN}/final.ckpt",
        pretrained=f"{FLIP_RUN}/pretrained.ckpt",
        variant=variant_inputs("flip"),  # the checkpoint's module is built with its loss
    output:
        metrics=f"{FLIP_RUN}/metrics.json",
        predictions=f"{FLIP_RUN}/predictions.parquet",
        skipped=f"{FLIP_RUN}/val.skipped.tsv",
        train_skipped=f"{FLIP_RUN}/train.skipped.tsv",
    params:
        settings=lambda wc: settings_of("flip", wc.experiment),
        val=lambda wc: val_folder(FLIP, wc.dataset),
        # the probe's train split: the dataset's `train`, else train/ beside val/
        train=lambda wc: FLIP["datasets"][wc.dataset].get("train")
        or f"{val_folder(FLIP, wc.dataset)}/train",
        zeroshot=lambda wc: as_json(FLIP["datasets"][wc.dataset].get("zeroshot", {})),
        evaluate=as_json(FLIP["evaluate"]),
        cache=f"{FLIP_RUN}/eval_cache",  # undeclared: a rerun reuses the image features
        policy=FLIP["on_bad_sample"],
        max_pixels=config["max_image_pixels"],
    log:
        "logs/flip_evaluate/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/flip_evaluate/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        FLIP_ENV
    threads: 1
    resources:
        **resource_class("GPU_1"),
    shell:
        "python scripts/flip.py evaluate --checkpoint {input.checkpoint:q} "
        "--pretrained {input.pretrained:q} --val {params.val:q} --train {params.train:q} "
        "--zeroshot {params.zeroshot:q} --evaluate {params.evaluate:q} "
        "--cache-dir {params.cache:q} --metrics {output.metrics:q} "
        "--predictions {output.predictions:q} --dataset {wildcards.dataset:q} "
        "--experiment {wildcards.experiment:q} --seed {wildcards.seed:q} "
        "--settings {params.settings:q} --on-bad-sample {params.policy:q} "
        "--skipped {output.skipped:q} --train-skipped {output.train_skipped:q} "
        "--max-pixels {params.max_pixels:q} > {log:q} 2>&1"


rule flip_figures:
    input:
        metrics=lambda wc: [f"{run.folder}/metrics.json" for run in dataset_runs("flip", wc.dataset)],
        predictions=lambda wc: [
            f"{run.folder}/predictions.parquet" for run in dataset_runs("flip", wc.dataset)
        ],
    output:
        figure=report(
            "results/flip/{dataset}/figures/mask_ratio.png",
            category="flip",
            subcategory="{dataset}",
            caption="../report/flip_mask_ratio.rst",
        ),
        csv="results/flip/{dataset}/figures/comparison.csv",
        md=report(
            "results/flip/{dataset}/figures/comparison.md",
            category="flip",
            subcategory="{dataset}",
            caption="../report/flip_comparison.rst",
        ),
    params:
        val=lambda wc: val_folder(FLIP, wc.dataset),
    log:
        "logs/flip_figures/{dataset}.log",
    conda:
        FLIP_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/flip.py figures --metrics {input.metrics:q} --val {params.val:q} "
        "--out {output.figure:q} --comparison {output.csv:q} > {log:q} 2>&1"


rule flip:
    """All runs and figures of the FLIP track."""
    input:
        [f"{run.folder}/metrics.json" for run in track_runs("flip")],
        expand(
            "results/flip/{dataset}/figures/mask_ratio.png",
            dataset=enabled_datasets("flip", FLIP),
        ),
    default_target: False
