# Watermarking LLM output: demo documents and demo LM -> prompts (per dataset x model) ->
# generate (watermarked + plain) -> attack -> detect -> evaluate -> figures.
# Every rule calls `python scripts/watermark.py <stage>`; the logic lives in workflow/watermark.

from workflow.common.schedule import check_schedules
from workflow.watermark.sizes import schedules as watermark_schedules
from workflow.watermark.sources import (
    DEMO_MODEL,
    PROMPTS,
    check_models,
    documents,
    first_runs,
    model_folder,
    model_inputs,
)

WATERMARK_ENV = "../envs/watermark.yaml"
WM = config["watermark"]
WM_RUN = "results/watermark/{dataset}/{experiment}/seed{seed}"

try:
    check_models(WM)
    check_schedules(watermark_schedules(config, SITE))  # the demo LM's warm-up fits its run
except ConfigError as err:
    sys.exit(f"error: {err}")

wm_model = lambda wc: experiment_settings_of("watermark", wc.experiment)["model"]  # noqa: E731


rule watermark_demo:
    output:
        "data/demo/watermark/{dataset}/manifest.json",
    params:
        settings=as_json(WM["demo"]),
    log:
        "logs/watermark_demo/{dataset}.log",
    benchmark:
        "benchmarks/watermark_demo/{dataset}.tsv"
    conda:
        WATERMARK_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/watermark.py demo --root \"$(dirname {output:q})\" "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule watermark_lm:
    output:
        directory(DEMO_MODEL),
    params:
        settings=as_json(WM["lm"]),
        run_dir=f"{DEMO_MODEL}.run",  # undeclared: resumable checkpoints survive a rerun
    log:
        "logs/watermark_lm/{model}.log",
    benchmark:
        "benchmarks/watermark_lm/{model}.tsv"
    conda:
        WATERMARK_ENV
    threads: 1  # on 2 cores one thread each for two jobs beats two threads for one
    resources:
        **resource_class("GPU_1"),
    shell:
        "python scripts/watermark.py lm --settings {params.settings:q} "
        "--run-dir {params.run_dir:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule watermark_prompts:
    input:
        data=lambda wc: dataset_inputs("watermark", wc.dataset),
        model=lambda wc: model_inputs(WM, wc.model),
    output:
        prompts=PROMPTS,
        counts=PROMPTS.replace(".jsonl", ".counts.json"),
        skipped=PROMPTS.replace(".jsonl", ".skipped.tsv"),
    params:
        documents=lambda wc: documents(WM, wc.dataset),
        model=lambda wc: model_folder(WM, wc.model),
        settings=as_json(WM["prompts"]),
        policy=WM["on_bad_sample"],
    log:
        "logs/watermark_prompts/{dataset}_{model}.log",
    benchmark:
        "benchmarks/watermark_prompts/{dataset}_{model}.tsv"
    conda:
        WATERMARK_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/watermark.py prompts --documents {params.documents:q} "
        "--model {params.model:q} --settings {params.settings:q} --out {output.prompts:q} "
        "--counts {output.counts:q} --skipped {output.skipped:q} "
        "--on-bad-sample {params.policy:q} > {log:q} 2>&1"


rule watermark_generate:
    input:
        prompts=lambda wc: PROMPTS.format(dataset=wc.dataset, model=wm_model(wc)),
        model=lambda wc: model_inputs(WM, wm_model(wc)),
        variant=variant_inputs("watermark"),  # a plug-in seeding scheme's file
    output:
        generations=f"{WM_RUN}/generations.jsonl",
        info=f"{WM_RUN}/generation.json",
    params:
        model=lambda wc: model_folder(WM, wm_model(wc)),
        settings=lambda wc: settings_of("watermark", wc.experiment),
    log:
        "logs/watermark_generate/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/watermark_generate/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        WATERMARK_ENV
    threads: 1
    resources:
        **resource_class("GPU_1"),
    shell:
        "python scripts/watermark.py generate --prompts {input.prompts:q} --model {params.model:q} "
        "--settings {params.settings:q} --out {output.generations:q} --info {output.info:q} "
        "--seed {wildcards.seed:q} > {log:q} 2>&1"


rule watermark_attack:
    input:
        generations=f"{WM_RUN}/generations.jsonl",
        model=lambda wc: model_inputs(WM, wm_model(wc)),
    output:
        f"{WM_RUN}/attacked.jsonl",
    params:
        model=lambda wc: model_folder(WM, wm_model(wc)),
        attacks=as_json(WM["attacks"]),
    log:
        "logs/watermark_attack/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/watermark_attack/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        WATERMARK_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/watermark.py attack --generations {input.generations:q} "
        "--model {params.model:q} --attacks {params.attacks:q} --out {output:q} "
        "--seed {wildcards.seed:q} > {log:q} 2>&1"


PARAPHRASER = WM["paraphrase"]["model"]
# what the attack stages write: detect scores them, evaluate reads their texts
WM_ATTACKED = [f"{WM_RUN}/attacked.jsonl"] + (
    [f"{WM_RUN}/paraphrased.jsonl"] if PARAPHRASER else []
)


rule watermark_paraphrase:
    input:
        generations=f"{WM_RUN}/generations.jsonl",
        model=lambda wc: model_inputs(WM, wm_model(wc)),
        paraphraser=model_inputs(WM, PARAPHRASER),
    output:
        f"{WM_RUN}/paraphrased.jsonl",
    params:
        model=lambda wc: model_folder(WM, wm_model(wc)),
        paraphraser=lambda wc: model_folder(WM, PARAPHRASER),
        settings=as_json(WM["paraphrase"]),
    log:
        "logs/watermark_paraphrase/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/watermark_paraphrase/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        WATERMARK_ENV
    threads: 1
    resources:
        **resource_class("GPU_1"),
    shell:
        "python scripts/watermark.py paraphrase --generations {input.generations:q} "
        "--model {params.model:q} --paraphraser {params.paraphraser:q} "
        "--settings {params.settings:q} --out {output:q} --seed {wildcards.seed:q} > {log:q} 2>&1"


rule watermark_detect:
    input:
        generations=f"{WM_RUN}/generations.jsonl",
        attacked=WM_ATTACKED,
        model=lambda wc: model_inputs(WM, wm_model(wc)),
        variant=variant_inputs("watermark"),
    output:
        f"{WM_RUN}/scores.parquet",
    params:
        model=lambda wc: model_folder(WM, wm_model(wc)),
        settings=lambda wc: settings_of("watermark", wc.experiment),
        detect=as_json(WM["detect"]),
    log:
        "logs/watermark_detect/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/watermark_detect/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        WATERMARK_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/watermark.py detect --generations {input.generations:q} "
        "--attacked {input.attacked:q} --model {params.model:q} --settings {params.settings:q} "
        "--detect {params.detect:q} --out {output:q} > {log:q} 2>&1"


rule watermark_evaluate:
    input:
        scores=f"{WM_RUN}/scores.parquet",
        generations=f"{WM_RUN}/generations.jsonl",
        attacked=WM_ATTACKED,
        info=f"{WM_RUN}/generation.json",
        oracle=model_inputs(WM, WM["oracle"]),
    output:
        f"{WM_RUN}/metrics.json",
    params:
        oracle=["--oracle", model_folder(WM, WM["oracle"])] if WM["oracle"] else [],
        settings=lambda wc: settings_of("watermark", wc.experiment),
        detect=as_json(WM["detect"]),
    log:
        "logs/watermark_evaluate/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/watermark_evaluate/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        WATERMARK_ENV
    resources:
        **resource_class("GPU_1" if WM["oracle"] else "CPU_SMALL"),
    shell:
        "python scripts/watermark.py evaluate --scores {input.scores:q} "
        "--generations {input.generations:q} --info {input.info:q} {params.oracle:q} "
        "--attacked {input.attacked:q} "
        "--settings {params.settings:q} --detect {params.detect:q} --metrics {output:q} "
        "--dataset {wildcards.dataset:q} --experiment {wildcards.experiment:q} "
        "--seed {wildcards.seed:q} > {log:q} 2>&1"


WM_FIGURES = ("detection", "z_vs_length", "attacks", "detectors", "quality")


rule watermark_figures:
    input:
        metrics=lambda wc: [f"{r.folder}/metrics.json" for r in first_runs(dataset_runs("watermark", wc.dataset))],
        scores=lambda wc: [f"{r.folder}/scores.parquet" for r in first_runs(dataset_runs("watermark", wc.dataset))],
    output:
        **{
            name: report(
                f"results/watermark/{{dataset}}/figures/{name}.png",
                category="watermark",
                subcategory="{dataset}",
                caption=f"../report/watermark_{name}.rst",
            )
            for name in WM_FIGURES
        },
        table=report(
            "results/watermark/{dataset}/figures/detectors.csv",
            category="watermark",
            subcategory="{dataset}",
            caption="../report/watermark_detectors_table.rst",
        ),
    log:
        "logs/watermark_figures/{dataset}.log",
    conda:
        WATERMARK_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/watermark.py figures --metrics {input.metrics:q} "
        "--scores {input.scores:q} --out \"$(dirname {output.detection:q})\" > {log:q} 2>&1"


rule watermark:
    """All runs and figures of the watermark track."""
    input:
        [f"{run.folder}/metrics.json" for run in track_runs("watermark")],
        expand(
            "results/watermark/{dataset}/figures/{name}.png",
            dataset=enabled_datasets("watermark", WM),
            name=WM_FIGURES,
        ),
    default_target: False
