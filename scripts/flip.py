#!/usr/bin/env python
"""FLIP (language-image pre-training with masking) on img2dataset shards: one subcommand per
stage.

Each subcommand also runs by hand, e.g. ``python scripts/flip.py filter --help``. Shards follow
the img2dataset webdataset layout (workflow/flip/layout.py): ``00000.tar`` with KEY.jpg /
KEY.txt / KEY.json per sample, plus ``00000.parquet`` and ``00000_stats.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflow.common import cli
from workflow.common.cli import log
from workflow.common.errors import InputError
from workflow.common.target import RunTarget


def cmd_demo(args: argparse.Namespace) -> None:
    from workflow.common.config import settings_object
    from workflow.flip.demo import DemoSettings, write_demo

    manifest = write_demo(args.root, settings_object(DemoSettings, args.settings))
    log.info(
        "demo: %d samples (%d planted bad) in %d shards, %d val images of %d classes in %s",
        manifest["samples"], manifest["samples"] - manifest["good"], len(manifest["shards"]),
        manifest["val_images"], len(manifest["classes"]), args.root,
    )  # fmt: skip


def cmd_hash(args: argparse.Namespace) -> None:
    from workflow.flip.dedup_hash import hash_group

    n = hash_group(args.shards, args.settings, args.out, args.profile)
    log.info(
        "hash: %d candidate samples in %d shards (profile %s, %d buckets) -> %s",
        n, len(args.shards), args.profile, args.settings.get("dedup_buckets", 1), args.out,
    )  # fmt: skip


def cmd_dedup(args: argparse.Namespace) -> None:
    from workflow.flip.dedup_buckets import find_later_copies

    counts = find_later_copies(args.hashes, args.bucket, args.out)
    log.info(
        "dedup bucket %d: %d candidates, %d distinct images, %d later copies (%d across "
        "groups), %d keys repeated from an earlier group -> %s",
        args.bucket, counts["candidates"], counts["images"], counts["later_copies"],
        counts["across_groups"], counts["repeated_keys"], args.out,
    )  # fmt: skip


def cmd_filter(args: argparse.Namespace) -> None:
    from workflow.flip.dedup_verdicts import read_later_copies
    from workflow.flip.filter import filter_shards

    later = read_later_copies(args.duplicates, args.shards) if args.duplicates else None
    counts = filter_shards(
        args.shards, args.out, args.settings, args.on_bad_sample, later, args.profile
    )
    dropped = {k: v for k, v in counts["dropped"].items() if v}
    log.info(
        "filter: kept %d of %d samples -> %d shards in %s; dropped %s",
        counts["kept"], counts["samples"], counts["output_shards"], args.out, dropped,
    )  # fmt: skip
    if counts["unchecked"]:
        log.info("filter: not checked (profile %s): %s", args.profile,
                 ", ".join(counts["unchecked"]))  # fmt: skip


def filtered_shards(folders: list[Path]) -> list[Path]:
    """The shards of the filter's group folders, group by group in shard order."""
    from workflow.flip.layout import list_shards

    shards = []
    for folder in folders:
        if not (folder / "counts.json").is_file():
            raise InputError(folder, "not a finished filter output (no counts.json)")
        shards += list_shards(folder)
    if len(shards) < 2:
        raise InputError(folders[0], f"{len(shards)} filtered shard(s): training holds the "
                         "last one out for validation, so it needs two or more")  # fmt: skip
    return shards


def cmd_train(args: argparse.Namespace) -> None:
    from workflow.flip.train import train_experiment, tune_settings

    settings = args.settings
    if args.init is not None:
        tune = cli.parse_settings(args.tune, "flip_tune", "--tune")
        settings = tune_settings(settings, tune)
    shards = filtered_shards(args.filtered)
    train_experiment(settings, shards, RunTarget.from_args(args), init_checkpoint=args.init)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from workflow.common.metrics import RunEvaluation
    from workflow.flip.evaluate import evaluate_stage

    evaluate_stage(
        RunEvaluation.from_args("flip", args), args.checkpoint, args.pretrained, args.val,
        skipped=args.skipped, train_skipped=args.train_skipped, train_dir=args.train,
        zeroshot=cli.parse_settings(args.zeroshot, "flip_zeroshot", "--zeroshot"),
        settings=cli.parse_settings(args.evaluate, "flip_evaluate", "--evaluate"),
        policy=args.on_bad_sample, cache_dir=args.cache_dir, device=args.device,
    )  # fmt: skip


def cmd_figures(args: argparse.Namespace) -> None:
    from workflow.flip.plots import figures_stage

    figures_stage(args.metrics, args.out, args.val, args.comparison)


def add_shards(parser: argparse.ArgumentParser) -> None:
    """What the hash and filter stages of one shard group share: its shards, the filter
    settings (the hash stage applies their metadata and caption checks) and the source's
    profile."""
    from workflow.flip.filter_checks import PROFILES

    parser.add_argument(
        "--shards", type=Path, nargs="+", required=True, help="input .tar shards, in order"
    )
    cli.add_settings(parser, "flip_filter", "the config's flip.filter section")
    parser.add_argument(
        "--profile", choices=list(PROFILES), default="laion400m",
        help="the source's metadata fields and rules (the dataset's `profile`; default "
        "laion400m)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser, stage = cli.stage_parser(__doc__)

    cli.demo_stage(stage, cmd_demo, "flip",
                   "write seeded synthetic image-caption shards (with planted bad samples), an "
                   "ImageFolder val set, classnames.txt and manifest.json")  # fmt: skip

    p = stage(
        "hash", cmd_hash,
        "list every key with the sha256 of every sample whose metadata and caption pass (one "
        "filter group)",
    )  # fmt: skip
    add_shards(p)
    p.add_argument("--out", type=Path, required=True, help="hash table (.parquet) to write")

    p = stage(
        "dedup", cmd_dedup,
        "find the samples of one bucket whose image or key an earlier shard already has, over "
        "every filter group",
    )  # fmt: skip
    p.add_argument(
        "--hashes", type=Path, nargs="+", required=True,
        help="the hash stage's tables, in group order",
    )  # fmt: skip
    p.add_argument(
        "--bucket", type=int, default=0,
        help="the bucket to read (0 to filter.dedup_buckets - 1, as the hash tables were "
        "written; default 0)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="the bucket's table to write")

    p = stage(
        "filter", cmd_filter,
        "drop NSFW, low-similarity, tiny, extreme-aspect, captionless, duplicate and damaged "
        "samples (repeated keys included); write new shards, dropped.parquet and counts.json",
    )  # fmt: skip
    add_shards(p)
    p.add_argument("--out", type=Path, required=True, help="folder of the filtered shards")
    p.add_argument(
        "--duplicates", type=Path, nargs="+",
        help="the dedup stage's table of every bucket (default: duplicates within --shards "
        "only)",
    )  # fmt: skip
    cli.add_bad_sample_args(p)

    p = stage(
        "train", cmd_train,
        "pre-train one experiment x seed on the filtered shards (the last one held out for "
        "val_loss); with --init, the unmasked tuning phase from that checkpoint",
    )  # fmt: skip
    p.add_argument(
        "--filtered", type=Path, nargs="+", required=True,
        help="group folders written by the filter stage, in order",
    )  # fmt: skip
    p.add_argument("--init", type=Path, help="pre-trained checkpoint: run the unmasked tuning")
    p.add_argument(
        "--tune", default="{}", metavar="JSON",
        help="the config's flip.tune section (with --init; schema $defs/flip_tune)",
    )  # fmt: skip
    cli.add_run_args(p, "flip_train")

    p = stage(
        "evaluate", cmd_evaluate,
        "zero-shot (class names x prompt templates) and linear-probe (fit on the train split, "
        "L2 swept on held-out train features) accuracy on the val split -> metrics.json",
    )  # fmt: skip
    p.add_argument("--val", type=Path, required=True,
                   help="folder with val/<class>/*.jpg (and classnames.txt with "
                   "classnames: file)")  # fmt: skip
    p.add_argument("--train", type=Path,
                   help="the probe's train split, <class>/*.jpg with val's class folders "
                   "(default: VAL/train)")  # fmt: skip
    p.add_argument("--zeroshot", default="{}", metavar="JSON",
                   help="the dataset's zeroshot section (schema $defs/flip_zeroshot)")  # fmt: skip
    p.add_argument("--evaluate", default="{}", metavar="JSON",
                   help="the config's flip.evaluate section "
                   "(schema $defs/flip_evaluate)")  # fmt: skip
    p.add_argument("--cache-dir", type=Path,
                   help="undeclared folder for the image features, reused by a rerun with the "
                   "same checkpoint and images (default: no cache)")  # fmt: skip
    p.add_argument("--device", default="auto",
                   help="torch device (default auto: cuda when available, else cpu)")  # fmt: skip
    p.add_argument("--pretrained", type=Path, required=True,
                   help="the masked phase's checkpoint (its training images/s)")  # fmt: skip
    cli.add_evaluate_args(p, "flip_train")
    cli.add_bad_sample_args(p, "damaged val images")
    p.add_argument("--train-skipped", type=Path,
                   help="TSV listing the damaged train images skipped")  # fmt: skip
    cli.add_image_args(p)

    p = stage("figures", cmd_figures, "accuracy and training images/s vs mask ratio")
    p.add_argument("--metrics", type=Path, nargs="+", required=True)
    p.add_argument("--val", type=Path, help="the val folder (its class count gives chance)")
    p.add_argument("--out", type=Path, required=True, help="figure to write")
    p.add_argument(
        "--comparison", type=Path,
        help="also write each mask ratio against mask 0 (paired, with its confidence interval; "
        "workflow/flip/compare.py) to this CSV and beside it as .md, reading the "
        "predictions.parquet beside each metrics.json",
    )  # fmt: skip
    return parser


if __name__ == "__main__":
    sys.exit(cli.run_cli(build_parser))
