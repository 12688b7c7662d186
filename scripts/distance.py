#!/usr/bin/env python
"""Per-object distance track (MOTSynth): one subcommand per pipeline stage.

Called by rules/distance.smk; each subcommand also runs by hand, e.g.
``python scripts/distance.py index --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflow.common import cli
from workflow.common.cli import log
from workflow.common.metrics import RunEvaluation, predictions_by_experiment
from workflow.common.target import RunTarget


def cmd_demo(args: argparse.Namespace) -> None:
    from workflow.common.config import settings_object
    from workflow.distance.demo import DemoSettings, write_demo

    manifest = write_demo(args.root, settings_object(DemoSettings, args.settings))
    log.info(
        "demo: %d sequences, %d frames, %d objects in %s",
        len(manifest["sequences"]),
        manifest["frames"],
        manifest["objects"],
        args.root,
    )


def cmd_index(args: argparse.Namespace) -> None:
    from workflow.distance.index import build_index

    outputs = {"train": args.train, "val": args.val, "test": args.test}
    counts = build_index(args.root, outputs, args.skipped, args.settings, args.on_bad_sample)
    log.info("indexed objects per split: %s", counts)


def cmd_extract(args: argparse.Namespace) -> None:
    from workflow.distance.store import extract_split

    extract_split(
        args.index,
        args.root,
        args.out,
        args.skipped,
        args.frame_size,
        args.crop_size,
        args.on_bad_sample,
    )


def cmd_train(args: argparse.Namespace) -> None:
    from workflow.distance.train import train_experiment

    train_experiment(args.settings, args.train_store, args.val_store, RunTarget.from_args(args))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from workflow.distance.evaluate import evaluate_stage

    evaluate_stage(RunEvaluation.from_args("distance", args), args.checkpoint, args.test_store)


def cmd_figures(args: argparse.Namespace) -> None:
    from workflow.distance.plots import error_vs_distance

    error_vs_distance(predictions_by_experiment(args.predictions), args.out)


def build_parser() -> argparse.ArgumentParser:
    parser, stage = cli.stage_parser(__doc__)

    cli.demo_stage(
        stage, cmd_demo, "distance", "write the seeded synthetic MOTSynth-style demo dataset"
    )

    p = stage("index", cmd_index, "annotations -> one Parquet table of valid objects per split")
    p.add_argument("--root", type=Path, required=True, help="MOTSynth root (annotations/, frames/)")
    for split in ("train", "val", "test"):
        p.add_argument(f"--{split}", type=Path, required=True, help=f"{split} table to write")
    cli.add_bad_sample_args(p, "samples", required=True)
    cli.add_settings(p, "distance_index", "the config's distance.index section")

    p = stage("extract", cmd_extract, "pack resized frames and object crops into HDF5")
    p.add_argument("--index", type=Path, required=True, help="split table from the index stage")
    p.add_argument("--root", type=Path, required=True, help="MOTSynth root the table refers to")
    p.add_argument("--out", type=Path, required=True, help="HDF5 store to write")
    p.add_argument("--skipped", type=Path, required=True, help="skipped-frames TSV to write")
    p.add_argument("--frame-size", type=int, nargs=2, required=True, metavar=("H", "W"))
    p.add_argument("--crop-size", type=int, nargs=2, required=True, metavar=("H", "W"))
    cli.add_bad_sample_args(p)
    cli.add_image_args(p)

    p = stage("train", cmd_train, "train one experiment x seed (resumes from its run folder)")
    p.add_argument("--train-store", type=Path, required=True)
    p.add_argument("--val-store", type=Path, required=True)
    cli.add_run_args(p, "distance_train")

    p = stage("evaluate", cmd_evaluate, "test-split predictions and metrics.json")
    p.add_argument("--test-store", type=Path, required=True)
    cli.add_evaluate_args(p, "distance_train")

    p = stage("figures", cmd_figures, "absolute error vs true distance, one line per model")
    p.add_argument("--predictions", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    return parser


if __name__ == "__main__":
    sys.exit(cli.run_cli(build_parser))
