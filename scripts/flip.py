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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # conda envs lack the package


from workflow.common.cli import add_settings, log, run_cli, stage_parser


def cmd_demo(args: argparse.Namespace) -> None:
    from workflow.flip.demo import DemoSettings, write_demo

    settings = DemoSettings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in args.settings.items()}
    )
    manifest = write_demo(args.root, settings)
    log.info(
        "demo: %d samples (%d planted bad) in %d shards, %d val images of %d classes in %s",
        manifest["samples"], manifest["samples"] - manifest["good"], len(manifest["shards"]),
        manifest["val_images"], len(manifest["classes"]), args.root,
    )  # fmt: skip


def cmd_filter(args: argparse.Namespace) -> None:
    from workflow.flip.filter import filter_shards

    counts = filter_shards(args.shards, args.out, args.settings, args.on_bad_sample)
    dropped = {k: v for k, v in counts["dropped"].items() if v}
    log.info(
        "filter: kept %d of %d samples -> %d shards in %s; dropped %s",
        counts["kept"], counts["samples"], counts["output_shards"], args.out, dropped,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser, stage = stage_parser(__doc__)

    p = stage(
        "demo", cmd_demo,
        "write seeded synthetic image-caption shards (with planted bad samples), an ImageFolder "
        "val set, classnames.txt and manifest.json",
    )  # fmt: skip
    p.add_argument("--root", type=Path, required=True, help="dataset folder to write")
    add_settings(p, "flip_demo", "the config's flip.demo section")

    p = stage(
        "filter", cmd_filter,
        "drop NSFW, low-similarity, tiny, extreme-aspect, captionless, duplicate and damaged "
        "samples; write new shards, dropped.parquet and counts.json",
    )  # fmt: skip
    p.add_argument(
        "--shards", type=Path, nargs="+", required=True, help="input .tar shards, in order"
    )
    p.add_argument("--out", type=Path, required=True, help="folder of the filtered shards")
    p.add_argument(
        "--on-bad-sample", choices=["skip", "fail"], default="skip",
        help="what to do with a damaged sample (default: skip and count it)",
    )  # fmt: skip
    add_settings(p, "flip_filter", "the config's flip.filter section")
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(build_parser))
