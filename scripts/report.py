#!/usr/bin/env python
"""Comparison report over runs: summary.csv (long format) and summary.md (one table per
track and dataset: mean, sd and 95% interval over seeds; each experiment tested against its
track's baseline by a paired t-test over seeds), from metrics.json files only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflow.common.atomic import atomic_path, write_text
from workflow.common.cli import log, run_cli
from workflow.common.report import build_report


def cmd_report(args: argparse.Namespace) -> None:
    summary, md = build_report(args.metrics, dict(args.baseline))
    with atomic_path(args.csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    write_text(args.md, md)
    log.info("report: %d runs -> %s, %s", len(args.metrics), args.csv, args.md)


def track_experiment(text: str) -> tuple[str, str]:
    track, sep, experiment = text.partition("=")
    if not sep or not track or not experiment:
        raise argparse.ArgumentTypeError(f"not TRACK=EXPERIMENT: {text!r}")
    return track, experiment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, nargs="+", required=True, help="metrics.json files")
    parser.add_argument(
        "--baseline",
        type=track_experiment,
        action="append",
        default=[],
        metavar="TRACK=EXP",
        help="a track's baseline experiment, which every other experiment is tested against "
        "(paired t-test over seeds); repeat per track",
    )
    parser.add_argument("--csv", type=Path, required=True, help="summary CSV to write")
    parser.add_argument("--md", type=Path, required=True, help="summary Markdown to write")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=cmd_report)
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(build_parser))
