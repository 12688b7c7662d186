# NeRF with camera pose refinement: demo scene -> prepare (hold-out, pose noise) -> train ->
# evaluate -> figures. Every rule calls `python scripts/nerf.py <stage>`; the logic lives in
# workflow/nerf.

from workflow.nerf.nerfstudio import check_settings

NERF_ENV = "../envs/nerf.yaml"
NERF = config["nerf"]
NERF_SCENE = "results/nerf/{dataset}/prep/transforms.json"
NERF_RUN = "results/nerf/{dataset}/{experiment}/seed{seed}"

try:
    for name in NERF["experiments"]:
        check_settings(experiment_settings_of("nerf", name), f"nerf.experiments.{name}")
except ConfigError as err:
    sys.exit(f"error: {err}")


nerf_settings = settings_with_dataset("nerf", "box")  # a scene's own box (a Replica room)
nerf_engine = lambda engine: experiments_matching("nerf", lambda s: s["engine"] == engine)  # noqa: E731
# What a training run publishes: the builtin engine's checkpoint, or a nerfstudio run's manifest.
NERF_TRAINED = {"builtin": f"{NERF_RUN}/final.ckpt", "nerfstudio": f"{NERF_RUN}/nerfstudio.json"}
nerf_trained = lambda wc: NERF_TRAINED[experiment_settings_of("nerf", wc.experiment)["engine"]]  # noqa: E731

nerf_format = lambda wc: (  # noqa: E731  the demo's layout, or the dataset's own
    NERF["demo"]["format"] if NERF["datasets"][wc.dataset].get("demo") else NERF["datasets"][wc.dataset]["format"]
)


rule nerf_demo:
    output:
        "data/demo/nerf/{dataset}/manifest.json",
    params:
        settings=as_json(NERF["demo"]),
    log:
        "logs/nerf_demo/{dataset}.log",
    benchmark:
        "benchmarks/nerf_demo/{dataset}.tsv"
    conda:
        NERF_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/nerf.py demo --root \"$(dirname {output:q})\" "
        "--settings {params.settings:q} > {log:q} 2>&1"


rule nerf_prepare:
    input:
        lambda wc: dataset_inputs("nerf", wc.dataset),
    output:
        NERF_SCENE,
    params:
        root=lambda wc: dataset_root("nerf", wc.dataset),
        fmt=nerf_format,
        settings=as_json(NERF["prepare"]),
        max_pixels=config["max_image_pixels"],
    log:
        "logs/nerf_prepare/{dataset}.log",
    benchmark:
        "benchmarks/nerf_prepare/{dataset}.tsv"
    conda:
        NERF_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/nerf.py prepare --format {params.fmt:q} --root {params.root:q} "
        "--out {output:q} --settings {params.settings:q} --max-pixels {params.max_pixels:q} "
        "> {log:q} 2>&1"


rule nerf_train:
    input:
        scene=NERF_SCENE,
        variant=variant_inputs("nerf"),  # a plug-in `pose` (builtin engine only)
    output:
        f"{NERF_RUN}/final.ckpt",
    params:
        settings=nerf_settings,
        run_dir=f"{NERF_RUN}/run",  # undeclared: resumable checkpoints survive a rerun
        devices=class_devices("GPU_1"),
        max_pixels=config["max_image_pixels"],
    log:
        "logs/nerf_train/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/nerf_train/{dataset}_{experiment}_seed{seed}.tsv"
    wildcard_constraints:
        experiment=nerf_engine("builtin"),
    conda:
        NERF_ENV
    threads: 1  # small batches: on 2 cores one thread each for two runs beats two for one
    resources:
        **resource_class("GPU_1"),
    shell:
        "python scripts/nerf.py train --scene {input.scene:q} --settings {params.settings:q} "
        "--run-dir {params.run_dir:q} --out {output:q} --seed {wildcards.seed:q} "
        "--devices {params.devices:q} --threads {threads} --max-pixels {params.max_pixels:q} "
        "> {log:q} 2>&1"


# The nerfstudio engine: ns-train, ns-export cameras and ns-eval from nerfstudio's own
# environment (`make nerfstudio`, or this conda env); the run folder keeps its checkpoints.
rule nerf_train_nerfstudio:
    input:
        NERF_SCENE,
    output:
        NERF_TRAINED["nerfstudio"],
    params:
        settings=nerf_settings,
        run_dir=f"{NERF_RUN}/nerfstudio",  # undeclared: resumable checkpoints survive a rerun
        devices=class_devices("GPU_1"),
        bin=NERF["nerfstudio"]["bin"],
        torch_home=NERF["nerfstudio"]["torch_home"],
        max_pixels=config["max_image_pixels"],
    log:
        "logs/nerf_train/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/nerf_train/{dataset}_{experiment}_seed{seed}.tsv"
    wildcard_constraints:
        experiment=nerf_engine("nerfstudio"),
    conda:
        "../envs/nerfstudio.yaml"
    threads: 4  # nerfstudio's image loading and caching
    resources:
        **resource_class("GPU_1"),
    shell:
        "python scripts/nerf.py train --scene {input:q} --settings {params.settings:q} "
        "--run-dir {params.run_dir:q} --out {output:q} --seed {wildcards.seed:q} "
        "--devices {params.devices:q} --ns-bin {params.bin:q} --torch-home {params.torch_home:q} "
        "--max-pixels {params.max_pixels:q} > {log:q} 2>&1"


rule nerf_evaluate:
    input:
        checkpoint=nerf_trained,
        scene=NERF_SCENE,
        variant=variant_inputs("nerf"),  # the test-time alignment builds the run's `pose`
    output:
        metrics=f"{NERF_RUN}/metrics.json",
        predictions=f"{NERF_RUN}/predictions.parquet",
        renders=report(
            f"{NERF_RUN}/renders.png",
            category="nerf",
            subcategory="{dataset}",
            caption="../report/nerf_renders.rst",
        ),
    params:
        settings=nerf_settings,
        max_pixels=config["max_image_pixels"],
    log:
        "logs/nerf_evaluate/{dataset}_{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/nerf_evaluate/{dataset}_{experiment}_seed{seed}.tsv"
    conda:
        NERF_ENV
    threads: 1
    resources:
        **resource_class("CPU_SMALL"),  # renders a few held-out views: seconds on a CPU
    shell:
        "python scripts/nerf.py evaluate --scene {input.scene:q} "
        "--checkpoint {input.checkpoint:q} --metrics {output.metrics:q} "
        "--predictions {output.predictions:q} --renders {output.renders:q} "
        "--dataset {wildcards.dataset:q} --experiment {wildcards.experiment:q} "
        "--seed {wildcards.seed:q} --settings {params.settings:q} "
        "--max-pixels {params.max_pixels:q} > {log:q} 2>&1"


rule nerf_figures:
    input:
        lambda wc: [f"{run.folder}/metrics.json" for run in dataset_runs("nerf", wc.dataset)],
    output:
        report(
            "results/nerf/{dataset}/figures/pose_error.png",
            category="nerf",
            subcategory="{dataset}",
            caption="../report/nerf_pose_error.rst",
        ),
    log:
        "logs/nerf_figures/{dataset}.log",
    conda:
        NERF_ENV
    resources:
        **resource_class("CPU_SMALL"),
    shell:
        "python scripts/nerf.py figures --metrics {input:q} --out {output:q} > {log:q} 2>&1"


rule nerf:
    """All runs and figures of the NeRF track."""
    input:
        [f"{run.folder}/metrics.json" for run in track_runs("nerf")],
        expand(
            "results/nerf/{dataset}/figures/pose_error.png",
            dataset=enabled_datasets("nerf", NERF),
        ),
    default_target: False
