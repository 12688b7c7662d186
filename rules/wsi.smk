# Multi-scale MIL on whole-slide images: demo -> segment -> tile -> features -> graph -> train ->
# evaluate -> figures. Every rule calls `python scripts/wsi.py <stage>`; the logic lives in
# workflow/wsi. Preparation stages work per dataset and write one file per slide beside their
# declared index.tsv; a rerun after a kill skips the slides already done with the same settings.

import re

from workflow.wsi.sources import (
    camelyon16_datasets,
    check_encoder,
    converted_labels,
    features_settings,
    lesion_folders,
    lesions_index,
    manifest_args,
    mil4wsi_datasets,
    slides_folder,
)

WSI_ENV = "../envs/wsi.yaml"
WSI = config["wsi"]
HEATMAP_EXPERIMENT = WSI["heatmap_experiment"]  # its first seed's attention is drawn
MIL4WSI = mil4wsi_datasets(WSI)
CAMELYON16 = camelyon16_datasets(WSI)

if workflow.is_main_process:  # once per run, not again in every job (timm takes seconds)
    try:
        check_encoder(WSI)
    except ConfigError as err:
        sys.exit(f"error: {err}")


ruleorder: wsi_mil4wsi > wsi_graph
ruleorder: wsi_camelyon16 > wsi_labels


rule wsi_labels:
    output:
        labels="results/wsi/{dataset}/labels/labels.csv",
        skipped="results/wsi/{dataset}/labels/skipped.tsv",
    params:
        slides=lambda wc: WSI["datasets"][wc.dataset]["slides"],
        manifests=lambda wc: manifest_args(WSI["datasets"][wc.dataset]),
        positive=lambda wc: WSI["datasets"][wc.dataset]["positive"],
        settings=lambda wc: as_json(WSI["datasets"][wc.dataset].get("gdc") or {}),
        policy=WSI["on_bad_sample"],
    log:
        "logs/wsi_labels/{dataset}.log",
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/wsi.py labels --slides {params.slides:q} {params.manifests:q} "
        "--positive {params.positive:q} --labels {output.labels:q} --skipped {output.skipped:q} "
        "--settings {params.settings:q} --on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule wsi_camelyon16:
    """The labels CSV of a Camelyon16 root (official folders + testing/reference.csv)."""
    output:
        labels="results/wsi/{dataset}/labels/labels.csv",
    wildcard_constraints:
        dataset="|".join(map(re.escape, CAMELYON16)) or "(?!)",
    params:
        root=lambda wc: WSI["datasets"][wc.dataset]["camelyon16"],
        settings=lambda wc: as_json(WSI["datasets"][wc.dataset].get("camelyon16_split") or {}),
    log:
        "logs/wsi_camelyon16/{dataset}.log",
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/wsi.py camelyon16 --root {params.root:q} --labels {output.labels:q} "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule wsi_mil4wsi:
    input:
        labels=lambda wc: converted_labels(WSI, wc.dataset) or [],
    output:
        index="results/wsi/{dataset}/prep/graphs/index.tsv",
        skipped="results/wsi/{dataset}/prep/graphs/skipped.tsv",
    wildcard_constraints:
        dataset="|".join(map(re.escape, MIL4WSI)) or "(?!)",
    params:
        graphs=lambda wc: WSI["datasets"][wc.dataset]["mil4wsi"],
        labels=lambda wc: WSI["datasets"][wc.dataset]["labels"],
        trusted=lambda wc: ["--trusted"] if WSI["datasets"][wc.dataset].get("trusted_pickles") else [],
        policy=WSI["on_bad_sample"],
    log:
        "logs/wsi_mil4wsi/{dataset}.log",
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/wsi.py mil4wsi --graphs-dir {params.graphs:q} --labels {params.labels:q} "
        "{params.trusted:q} --index {output.index:q} --skipped {output.skipped:q} "
        "--on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule wsi_demo:
    output:
        "data/demo/wsi/{dataset}/manifest.json",
    params:
        settings=lambda wc: as_json(WSI["demo"]),
    log:
        "logs/wsi_demo/{dataset}.log",
    benchmark:
        "benchmarks/wsi_demo/{dataset}.tsv"
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/wsi.py demo --root \"$(dirname {output:q})\" "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule wsi_segment:
    input:
        lambda wc: dataset_inputs("wsi", wc.dataset),
        lambda wc: converted_labels(WSI, wc.dataset) or [],
    output:
        index="results/wsi/{dataset}/prep/segment/index.tsv",
        skipped="results/wsi/{dataset}/prep/segment/skipped.tsv",
    params:
        slides=lambda wc: (
            slides_folder(WSI, wc.dataset) or dataset_path("wsi", wc.dataset, "slides", "slides")
        ),
        labels=lambda wc: (
            converted_labels(WSI, wc.dataset)
            or dataset_path("wsi", wc.dataset, "labels", "labels.csv")
        ),
        mpp=lambda wc: (
            ["--mpp", mpp] if (mpp := WSI["datasets"][wc.dataset].get("mpp")) else []
        ),
        settings=lambda wc: as_json(WSI["segment"]),
        policy=WSI["on_bad_sample"],
    log:
        "logs/wsi_segment/{dataset}.log",
    benchmark:
        "benchmarks/wsi_segment/{dataset}.tsv"
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/wsi.py segment --slides {params.slides:q} --labels {params.labels:q} "
        "{params.mpp:q} --index {output.index:q} --skipped {output.skipped:q} "
        "--settings {params.settings:q} --on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule wsi_tile:
    input:
        "results/wsi/{dataset}/prep/segment/index.tsv",
    output:
        index="results/wsi/{dataset}/prep/tiles/index.tsv",
        skipped="results/wsi/{dataset}/prep/tiles/skipped.tsv",
    params:
        settings=lambda wc: as_json(WSI["tile"]),
        policy=WSI["on_bad_sample"],
    log:
        "logs/wsi_tile/{dataset}.log",
    benchmark:
        "benchmarks/wsi_tile/{dataset}.tsv"
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/wsi.py tile --segments {input:q} --index {output.index:q} "
        "--skipped {output.skipped:q} --settings {params.settings:q} "
        "--on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule wsi_lesions:
    """Tile tumour labels and the FROC's evaluation mask per slide, from lesion annotations."""
    input:
        "results/wsi/{dataset}/prep/tiles/index.tsv",
    output:
        index="results/wsi/{dataset}/prep/lesions/index.tsv",
        skipped="results/wsi/{dataset}/prep/lesions/skipped.tsv",
    params:
        folders=lambda wc: lesion_folders(WSI, wc.dataset),
        settings=as_json(WSI["lesions"]),
        policy=WSI["on_bad_sample"],
    log:
        "logs/wsi_lesions/{dataset}.log",
    benchmark:
        "benchmarks/wsi_lesions/{dataset}.tsv"
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/wsi.py lesions --tiles {input:q} --annotations {params.folders:q} "
        "--index {output.index:q} --skipped {output.skipped:q} --settings {params.settings:q} "
        "--on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule wsi_features:
    input:
        "results/wsi/{dataset}/prep/tiles/index.tsv",
    output:
        index="results/wsi/{dataset}/prep/features/index.tsv",
        skipped="results/wsi/{dataset}/prep/features/skipped.tsv",
    params:
        settings=lambda wc: as_json(features_settings(WSI, wc.dataset)),
        policy=WSI["on_bad_sample"],
        devices=class_devices("GPU_1"),
        workers=class_cpus("GPU_1"),
    log:
        "logs/wsi_features/{dataset}.log",
    benchmark:
        "benchmarks/wsi_features/{dataset}.tsv"
    conda:
        WSI_ENV
    threads: 4
    resources:
        **resource_class("GPU_1"),
    shell:
        "python scripts/wsi.py features --tiles {input:q} --index {output.index:q} "
        "--skipped {output.skipped:q} --settings {params.settings:q} "
        "--on-bad-sample {params.policy:q} --devices {params.devices:q} "
        "--workers {params.workers:q} > {log:q} 2>&1"


rule wsi_graph:
    input:
        "results/wsi/{dataset}/prep/features/index.tsv",
    output:
        "results/wsi/{dataset}/prep/graphs/index.tsv",
    log:
        "logs/wsi_graph/{dataset}.log",
    benchmark:
        "benchmarks/wsi_graph/{dataset}.tsv"
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_PREP"),
    shell:
        "python scripts/wsi.py graph --features {input:q} --index {output:q} > {log:q} 2>&1"


rule wsi_train:
    input:
        graphs="results/wsi/{dataset}/prep/graphs/index.tsv",
        variant=variant_inputs("wsi"),
    output:
        "results/wsi/{dataset}/{experiment}/seed{seed}/final.ckpt",
    wildcard_constraints:
        experiment=experiments_matching("wsi", lambda s: s["resources"] == "GPU_1"),
    params:
        settings=settings_with_dataset("wsi"),
        run_dir="results/wsi/{dataset}/{experiment}/seed{seed}/run",  # undeclared: resumable checkpoints survive a rerun
        launch=run_launch("wsi"),
        devices=run_devices("wsi"),
        nodes=run_nodes("wsi"),
    log:
        "logs/wsi_train/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/wsi_train/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        WSI_ENV
    # one torch thread: the MIL heads are small, so on a laptop two runs side by side beat one
    # run on two threads (SLURM jobs get cpus_per_task)
    threads: 1
    resources:
        **resource_class("GPU_1"),
    shell:
        "{params.launch} python scripts/wsi.py train --settings {params.settings:q} "
        "--graphs {input.graphs:q} --run-dir {params.run_dir:q} --out {output:q} --seed {wildcards.seed:q} "
        "--devices {params.devices:q} --num-nodes {params.nodes:q} > {log:q} 2>&1"


use rule wsi_train as wsi_train_ddp with:
    wildcard_constraints:
        experiment=experiments_matching("wsi", lambda s: s["resources"] in DISTRIBUTED),
    resources:
        **experiment_resources("wsi", DISTRIBUTED),


rule wsi_evaluate:
    input:
        checkpoint="results/wsi/{dataset}/{experiment}/seed{seed}/final.ckpt",
        graphs="results/wsi/{dataset}/prep/graphs/index.tsv",
        variant=variant_inputs("wsi"),
        lesions=lambda wc: lesions_index(WSI, wc.dataset) or [],
    output:
        metrics="results/wsi/{dataset}/{experiment}/seed{seed}/metrics.json",
        predictions="results/wsi/{dataset}/{experiment}/seed{seed}/predictions.parquet",
        attention="results/wsi/{dataset}/{experiment}/seed{seed}/attention.h5",
    params:
        settings=settings_with_dataset("wsi"),
        lesions=lambda wc, input: ["--lesions", input.lesions] if input.lesions else [],
    log:
        "logs/wsi_evaluate/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/wsi_evaluate/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/wsi.py evaluate --checkpoint {input.checkpoint:q} "
        "--graphs {input.graphs:q} --metrics {output.metrics:q} "
        "--predictions {output.predictions:q} --attention {output.attention:q} "
        "{params.lesions:q} "
        "--dataset {wildcards.dataset:q} --experiment {wildcards.experiment:q} "
        "--seed {wildcards.seed:q} --settings {params.settings:q} > {log:q} 2>&1"


rule wsi_figures:
    input:
        predictions=lambda wc: [
            f"{run.folder}/predictions.parquet" for run in dataset_runs("wsi", wc.dataset)
        ],
        attention=lambda wc: f"{first_run('wsi', wc.dataset, HEATMAP_EXPERIMENT).folder}/attention.h5",
        segments=lambda wc: (
            [] if wc.dataset in MIL4WSI else f"results/wsi/{wc.dataset}/prep/segment/index.tsv"
        ),
    output:
        roc=report(
            "results/wsi/{dataset}/figures/roc.png",
            category="wsi",
            subcategory="{dataset}",
            caption="../report/wsi_roc.rst",
        ),
        heatmaps=report(
            directory("results/wsi/{dataset}/figures/heatmaps"),
            patterns=["{slide}.png"],
            category="wsi",
            subcategory="{dataset} heatmaps",
            caption="../report/wsi_heatmap.rst",
        ),
    params:
        segments=lambda wc, input: ["--segments", input.segments] if input.segments else [],
    log:
        "logs/wsi_figures/{dataset}.log",
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/wsi.py figures --predictions {input.predictions:q} "
        "--attention {input.attention:q} {params.segments:q} "
        "--roc {output.roc:q} --heatmaps {output.heatmaps:q} > {log:q} 2>&1"


rule wsi_reproduce:
    """One dataset's `published` experiment, every seed, against the published numbers."""
    input:
        lambda wc: published_runs("wsi", wc.dataset),
    output:
        "results/wsi/{dataset}/reproduction.md",
    params:
        published=lambda wc: as_json(WSI["datasets"][wc.dataset]["published"]),
    log:
        "logs/wsi_reproduce/{dataset}.log",
    conda:
        WSI_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/wsi.py reproduce --metrics {input:q} --settings {params.published:q} "
        "--out {output:q} > {log:q} 2>&1"


rule wsi_reproduction:
    """The published numbers of every dataset that has them, against our runs."""
    input:
        [
            f"results/wsi/{dataset}/reproduction.md"
            for dataset in enabled_datasets("wsi", WSI)
            if WSI["datasets"][dataset].get("published")
        ],
    default_target: False


rule wsi:
    """All runs and figures of the whole-slide-image track."""
    input:
        [f"{run.folder}/metrics.json" for run in track_runs("wsi")],
        expand(
            "results/wsi/{dataset}/figures/roc.png",
            dataset=enabled_datasets("wsi", WSI),
        ),
    default_target: False
