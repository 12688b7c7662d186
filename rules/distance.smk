# Per-object distance on MOTSynth: demo -> index -> extract -> train -> evaluate -> figures.
# Every rule calls `python scripts/distance.py <stage>`; the logic lives in workflow/distance.

DIST_ENV = "../envs/distance.yaml"
REFERENCE_MODELS = ("mean", "pinhole")  # no network: fitted on the CPU in seconds


rule distance_demo:
    output:
        "data/demo/distance/{dataset}/manifest.json",
    params:
        settings=lambda wc: as_json(config["distance"]["demo"]),
    log:
        "logs/distance_demo/{dataset}.log",
    benchmark:
        "benchmarks/distance_demo/{dataset}.tsv"
    conda:
        DIST_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/distance.py demo --root \"$(dirname {output:q})\" "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule distance_index:
    input:
        lambda wc: dataset_inputs("distance", wc.dataset),
    output:
        train="results/distance/{dataset}/prep/index/train.parquet",
        val="results/distance/{dataset}/prep/index/val.parquet",
        test="results/distance/{dataset}/prep/index/test.parquet",
        skipped="results/distance/{dataset}/prep/index/skipped.tsv",
    params:
        root=lambda wc: dataset_root("distance", wc.dataset),
        settings=lambda wc: as_json(config["distance"]["index"]),
        policy=config["distance"]["on_bad_sample"],
    log:
        "logs/distance_index/{dataset}.log",
    benchmark:
        "benchmarks/distance_index/{dataset}.tsv"
    conda:
        DIST_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/distance.py index --root {params.root:q} --train {output.train:q} "
        "--val {output.val:q} --test {output.test:q} --skipped {output.skipped:q} "
        "--settings {params.settings:q} --on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule distance_extract:
    input:
        "results/distance/{dataset}/prep/index/{split}.parquet",
    output:
        store="results/distance/{dataset}/prep/store/{split}.h5",
        skipped="results/distance/{dataset}/prep/store/{split}.skipped.tsv",
    params:
        root=lambda wc: dataset_root("distance", wc.dataset),
        frame=config["distance"]["extract"]["frame_size"],
        crop=config["distance"]["extract"]["crop_size"],
        policy=config["distance"]["on_bad_sample"],
        max_pixels=config["max_image_pixels"],
    log:
        "logs/distance_extract/{dataset}_{split}.log",
    benchmark:
        "benchmarks/distance_extract/{dataset}_{split}.tsv"
    conda:
        DIST_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/distance.py extract --index {input:q} --root {params.root:q} "
        "--out {output.store:q} --skipped {output.skipped:q} --frame-size {params.frame:q} "
        "--crop-size {params.crop:q} --on-bad-sample {params.policy:q} "
        "--max-pixels {params.max_pixels:q} > {log:q} 2>&1"


rule distance_train:
    input:
        train="results/distance/{dataset}/prep/store/train.h5",
        val="results/distance/{dataset}/prep/store/val.h5",
        variant=variant_inputs("distance"),
    output:
        "results/distance/{dataset}/{experiment}/seed{seed}/final.ckpt",
    wildcard_constraints:
        experiment=experiments_matching(
            "distance", lambda s: s["model"] not in REFERENCE_MODELS and s["resources"] == "GPU_1"
        ),
    params:
        settings=lambda wc: settings_of("distance", wc.experiment),
        run_dir="results/distance/{dataset}/{experiment}/seed{seed}/run",  # undeclared: resumable checkpoints survive a rerun
        launch=run_launch("distance"),
        devices=run_devices("distance"),
        nodes=run_nodes("distance"),
    log:
        "logs/distance_train/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/distance_train/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        DIST_ENV
    threads: 4
    resources:
        **resource_class("GPU_1"),
    shell:
        "{params.launch} python scripts/distance.py train --settings {params.settings:q} "
        "--train-store {input.train:q} --val-store {input.val:q} --run-dir {params.run_dir:q} "
        "--out {output:q} --seed {wildcards.seed:q} --devices {params.devices:q} "
        "--num-nodes {params.nodes:q} > {log:q} 2>&1"


use rule distance_train as distance_train_ddp with:
    wildcard_constraints:
        experiment=experiments_matching(
            "distance",
            lambda s: s["model"] not in REFERENCE_MODELS and s["resources"] in DISTRIBUTED,
        ),
    resources:
        **experiment_resources("distance", DISTRIBUTED),


use rule distance_train as distance_reference with:
    wildcard_constraints:
        experiment=experiments_matching("distance", lambda s: s["model"] in REFERENCE_MODELS),
    threads: 1
    resources:
        **resource_class("CPU_SMALL"),


rule distance_evaluate:
    input:
        checkpoint="results/distance/{dataset}/{experiment}/seed{seed}/final.ckpt",
        test="results/distance/{dataset}/prep/store/test.h5",
        variant=variant_inputs("distance"),
    output:
        metrics="results/distance/{dataset}/{experiment}/seed{seed}/metrics.json",
        predictions="results/distance/{dataset}/{experiment}/seed{seed}/predictions.parquet",
    params:
        settings=lambda wc: settings_of("distance", wc.experiment),
    log:
        "logs/distance_evaluate/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/distance_evaluate/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        DIST_ENV
    threads: 1  # mostly start-up: a second thread saves 1 s of 10 and holds a core
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/distance.py evaluate --checkpoint {input.checkpoint:q} "
        "--test-store {input.test:q} --metrics {output.metrics:q} "
        "--predictions {output.predictions:q} --dataset {wildcards.dataset:q} "
        "--experiment {wildcards.experiment:q} --seed {wildcards.seed:q} "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule distance_figures:
    input:
        lambda wc: [
            f"{run.folder}/predictions.parquet" for run in dataset_runs("distance", wc.dataset)
        ],
    output:
        report(
            "results/distance/{dataset}/figures/error_vs_distance.png",
            category="distance",
            subcategory="{dataset}",
            caption="../report/distance_error.rst",
        ),
    log:
        "logs/distance_figures/{dataset}.log",
    conda:
        DIST_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/distance.py figures --predictions {input:q} --out {output:q} > {log:q} 2>&1"


rule distance:
    """All runs and figures of the distance track."""
    input:
        [f"{run.folder}/metrics.json" for run in track_runs("distance")],
        expand(
            "results/distance/{dataset}/figures/error_vs_distance.png",
            dataset=enabled_datasets("distance", config["distance"]),
        ),
    default_target: False
