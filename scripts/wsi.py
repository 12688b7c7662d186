#!/usr/bin/env python
"""Multi-scale MIL on whole-slide images (DAS-MIL): one subcommand per pipeline stage.

Called by rules/wsi.smk; each subcommand also runs by hand, e.g.
``python scripts/wsi.py tile --help``. Preparation stages work on a whole dataset: they read
the previous stage's index.tsv and write their per-slide files beside their own index.tsv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflow.common import cli
from workflow.common.cli import log
from workflow.common.metrics import RunEvaluation
from workflow.common.target import RunTarget


def cmd_demo(args: argparse.Namespace) -> None:
    from workflow.common.config import settings_object
    from workflow.wsi.demo import DemoSettings, write_demo

    manifest = write_demo(args.root, settings_object(DemoSettings, args.settings))
    log.info("demo: %d slides in %s", len(manifest["slides"]), args.root)


def cmd_labels(args: argparse.Namespace) -> None:
    from workflow.wsi.prepare import labels_dataset

    labels_dataset(
        dict(args.manifest), args.positive, args.slides, args.labels, args.skipped,
        args.settings, args.on_bad_sample,
    )  # fmt: skip


def cmd_camelyon16(args: argparse.Namespace) -> None:
    from workflow.wsi.camelyon16 import camelyon16_dataset

    camelyon16_dataset(args.root, args.labels, args.settings["val"], args.settings["seed"])


def cmd_lesions(args: argparse.Namespace) -> None:
    from workflow.wsi.lesions import lesions_dataset

    lesions_dataset(
        args.tiles, args.annotations, args.index, args.skipped, args.settings, args.on_bad_sample
    )


def cmd_mil4wsi(args: argparse.Namespace) -> None:
    from workflow.wsi.prepare import mil4wsi_dataset

    mil4wsi_dataset(
        args.graphs_dir, args.labels, args.index, args.skipped, args.on_bad_sample, args.trusted
    )


def cmd_segment(args: argparse.Namespace) -> None:
    from workflow.wsi.prepare import segment_dataset

    segment_dataset(
        args.slides, args.labels, args.index, args.skipped, args.settings, args.on_bad_sample,
        args.mpp,
    )  # fmt: skip


def cmd_tile(args: argparse.Namespace) -> None:
    from workflow.wsi.prepare import tile_dataset

    tile_dataset(args.segments, args.index, args.skipped, args.settings, args.on_bad_sample)


def cmd_features(args: argparse.Namespace) -> None:
    import torch

    from workflow.wsi.prepare import features_dataset

    device = "cuda" if args.devices > 0 and torch.cuda.is_available() else "cpu"
    workers = args.workers if device == "cuda" else 0  # on CPU, readers steal the encoder's cores
    log.info("encoder %s on %s, %d reader workers", args.settings["encoder"], device, workers)
    features_dataset(
        args.tiles, args.index, args.skipped, args.settings, args.on_bad_sample, device, workers,
    )  # fmt: skip


def cmd_graph(args: argparse.Namespace) -> None:
    from workflow.wsi.prepare import graph_dataset

    graph_dataset(args.features, args.index)


def cmd_train(args: argparse.Namespace) -> None:
    from workflow.wsi.prepare import split_files
    from workflow.wsi.train import train_experiment

    train, val = split_files(args.graphs, "train"), split_files(args.graphs, "val")
    train_experiment(args.settings, train, val, RunTarget.from_args(args))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from workflow.wsi.evaluate import evaluate_stage

    evaluation = RunEvaluation.from_args("wsi", args)
    evaluate_stage(evaluation, args.checkpoint, args.graphs, args.attention, args.lesions)


def cmd_figures(args: argparse.Namespace) -> None:
    from workflow.wsi.plots import figures_stage

    figures_stage(args.predictions, args.roc, args.attention, args.heatmaps, args.segments)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from workflow.wsi.reproduce import reproduction_report

    published = args.settings
    rows = reproduction_report(args.metrics, published["metrics"], published["source"], args.out)
    for row in rows:
        log.info(
            "%s: published %.3f, ours %.3f +- %.3f over %d seeds (tolerance +-%.3f): %s",
            row.metric, row.published, row.mean, row.sd, row.seeds, row.tolerance,
            "reproduced" if row.reproduced else "NOT reproduced",
        )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser, stage = cli.stage_parser(__doc__)

    def index_args(p: argparse.ArgumentParser, section: str | None = None) -> None:
        """A per-slide stage's index, skipped slides and policy (and its config section)."""
        p.add_argument("--index", type=Path, required=True, help="index.tsv to write")
        cli.add_bad_sample_args(p, "slides", sample="slide", required=True)
        if section:
            cli.add_settings(p, f"wsi_{section}", f"the config's wsi.{section} section")

    segments = (
        "index.tsv of the segment stage (its thumbnails; without it, e.g. for mil4wsi graphs, "
        "the heatmaps are drawn on white)"
    )

    cli.demo_stage(
        stage, cmd_demo, "wsi", "write the seeded synthetic Camelyon16-style demo dataset"
    )

    p = stage("labels", cmd_labels, "labels CSV of TCGA slides from per-class GDC manifests")
    p.add_argument("--slides", type=Path, required=True, help="gdc-client download folder")
    p.add_argument(
        "--manifest", nargs=2, action="append", metavar=("CLASS", "TSV"), required=True,
        help="a class name and its GDC manifest (give it twice: one per class)",
    )  # fmt: skip
    p.add_argument("--positive", required=True, help="the CLASS that is label 1 (e.g. LUSC)")
    p.add_argument("--labels", type=Path, required=True, help="labels CSV to write")
    cli.add_bad_sample_args(p, "slides", sample="slide", required=True)
    cli.add_settings(p, "wsi_gdc", "the dataset's gdc section")

    p = stage("camelyon16", cmd_camelyon16, "labels CSV of a Camelyon16 root as distributed")
    p.add_argument(
        "--root", type=Path, required=True,
        help="Camelyon16 folder (training/normal, training/tumor, testing/images, "
        "testing/reference.csv)",
    )  # fmt: skip
    p.add_argument("--labels", type=Path, required=True, help="labels CSV to write")
    cli.add_settings(p, "wsi_camelyon16", "the dataset's camelyon16_split section")

    p = stage("lesions", cmd_lesions, "tile tumour labels and FROC masks from lesion XMLs")
    p.add_argument("--tiles", type=Path, required=True, help="index.tsv of the tile stage")
    p.add_argument(
        "--annotations", type=Path, nargs="+", required=True,
        help="folders of <slide_id>.xml (ASAP), or folders whose .zip holds them",
    )  # fmt: skip
    index_args(p, "lesions")

    p = stage("mil4wsi", cmd_mil4wsi, "released mil4wsi graph files -> this track's graphs")
    p.add_argument("--graphs-dir", type=Path, required=True, help="folder of <slide_id>.pt")
    p.add_argument("--labels", type=Path, required=True, help="CSV of slide_id,label,split")
    p.add_argument(
        "--trusted", action="store_true",
        help="unpickle files that need more than torch_geometric's classes (trusted sources only)",
    )  # fmt: skip
    index_args(p)

    p = stage("segment", cmd_segment, "tissue mask and thumbnail PNG per slide")
    p.add_argument("--slides", type=Path, required=True, help="folder of the slide files")
    p.add_argument("--labels", type=Path, required=True, help="CSV of slide_id,label,split")
    p.add_argument("--mpp", type=float, help="um/px of level 0 for slides that do not say")
    index_args(p, "segment")

    p = stage("tile", cmd_tile, "tile coordinates at every magnification, with parents")
    p.add_argument("--segments", type=Path, help=segments)
    index_args(p, "tile")

    p = stage("features", cmd_features, "frozen-encoder features of every tile")
    p.add_argument("--tiles", type=Path, required=True, help="index.tsv of the tile stage")
    p.add_argument("--devices", type=int, default=0, help="GPUs (0: CPU)")
    p.add_argument(
        "--workers", type=int, default=0,
        help="slide-reading worker processes on a GPU (CPU runs read in-process: "
        "tests/benchmarks/features_benchmark.py measures why)",
    )  # fmt: skip
    index_args(p, "features")

    p = stage("graph", cmd_graph, "one multi-scale torch_geometric graph per slide")
    p.add_argument("--features", type=Path, required=True, help="index.tsv of the features stage")
    p.add_argument("--index", type=Path, required=True, help="index.tsv to write")

    p = stage("train", cmd_train, "train one experiment x seed (resumes from its run folder)")
    p.add_argument("--graphs", type=Path, required=True, help="index.tsv of the graph stage")
    cli.add_run_args(p, "wsi_train")

    p = stage("evaluate", cmd_evaluate, "test-slide predictions, attention scores, metrics.json")
    p.add_argument("--graphs", type=Path, required=True, help="index.tsv of the graph stage")
    cli.add_evaluate_args(p, "wsi_train")
    p.add_argument("--attention", type=Path, required=True, help="attention HDF5 to write")
    p.add_argument(
        "--lesions", type=Path,
        help="index.tsv of the lesions stage: adds the FROC and the tile-level AUC",
    )  # fmt: skip

    p = stage("figures", cmd_figures, "ROC curves of every run, attention heatmaps of one")
    p.add_argument("--predictions", type=Path, nargs="+", required=True)
    p.add_argument("--attention", type=Path, required=True, help="attention HDF5 of one run")
    p.add_argument("--segments", type=Path, help=segments)
    p.add_argument("--roc", type=Path, required=True, help="ROC figure to write")
    p.add_argument("--heatmaps", type=Path, required=True, help="folder of heatmaps to write")

    p = stage("reproduce", cmd_reproduce, "an experiment's runs against its published numbers")
    p.add_argument("--metrics", type=Path, nargs="+", required=True, help="the runs' metrics.json")
    p.add_argument("--out", type=Path, required=True, help="Markdown table to write")
    cli.add_settings(p, "wsi_published", "the dataset's `published` section")
    return parser


if __name__ == "__main__":
    sys.exit(cli.run_cli(build_parser))
