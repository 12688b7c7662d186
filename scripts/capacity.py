#!/usr/bin/env python
"""Capacity plan of a config on a site: per track the GPU-hours of all its GPU jobs (every
experiment x seed), the longest job against its resource class's runtime limit, every job
over its limit (and whether it can resume mid-run), and whether the whole DAG fits a budget of
GPUs x hours, in GPU-hours and in wall time with the jobs running in parallel.

Throughput per job kind comes from config/throughput.yaml (measured, or an estimate that
says how); the jobs' work from the config and the tracks' dataset sizes (the numbers the
schedule check uses). CPU jobs are not planned.

    python scripts/capacity.py --configfile config/leonardo.yaml --profile profiles/leonardo \\
        --budget-gpus 500 --budget-hours 72
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow.common.atomic import write_text
from workflow.common.capacity import load_throughput, make_plan
from workflow.common.capacity_report import csv_text, markdown
from workflow.common.cli import log, run_cli
from workflow.common.config import ConfigError, deep_merge, load_yaml, validate_config
from workflow.common.errors import InputError
from workflow.common.resources import load_site

ROOT = Path(__file__).resolve().parents[1]


def track_jobs(config: Mapping[str, Any], site: Mapping[str, Any] | None, root: Path) -> list:
    """The GPU jobs of every track in ``tracks`` (each track's workflow/<track>/sizes.py)."""
    from workflow.distance.sizes import capacity_jobs as distance_jobs
    from workflow.flip.sizes import capacity_jobs as flip_jobs
    from workflow.nerf.sizes import capacity_jobs as nerf_jobs
    from workflow.sequence.sizes import capacity_jobs as sequence_jobs
    from workflow.watermark.sizes import capacity_jobs as watermark_jobs
    from workflow.wsi.sizes import capacity_jobs as wsi_jobs

    builders = {
        "distance": lambda: distance_jobs(config, site, root),
        "wsi": lambda: wsi_jobs(config, site, root),
        "sequence": lambda: sequence_jobs(config, site, root),
        "flip": lambda: flip_jobs(config, site, root),
        "watermark": lambda: watermark_jobs(config, site),
        "nerf": lambda: nerf_jobs(config, site),
    }
    return [job for track in config["tracks"] for job in builders[track]()]


def read_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config as Snakemake builds it: config/config.yaml, then each --configfile merged
    over it, validated (defaults filled); or the rule's --config-json as it is."""
    if args.config_json:
        return json.loads(args.config_json)
    config = load_yaml(ROOT / "config" / "config.yaml")
    for path in args.configfile:
        if not Path(path).is_file():
            raise InputError(path, "config file not found")
        config = deep_merge(config, load_yaml(path))
    return validate_config(config)


def profile_settings(profile: Path | None) -> tuple[list[str], int]:
    """A Snakemake profile's resource maps (its `config: resource_maps=[...]` entry) and
    `retries`."""
    if profile is None:
        return [], 0
    path = profile / "config.yaml"
    if not path.is_file():
        raise InputError(path, "profile config not found")
    settings = load_yaml(path)
    maps: list[str] = []
    for item in settings.get("config") or []:
        key, _, value = str(item).partition("=")
        if key.strip() == "resource_maps":
            maps = [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
    return maps, int(settings.get("retries") or 0)


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the project where it lies inside."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def cmd_plan(args: argparse.Namespace) -> None:
    try:
        config = read_config(args)
        maps, retries = profile_settings(args.profile)
        maps = [str(m) for m in args.resource_map] or maps
        site = load_site(maps) if maps else None
        table = load_throughput(load_yaml(args.throughput), str(args.throughput))
        plan = make_plan(
            track_jobs(config, site, args.root),
            table,
            site,
            args.device,
            args.retries if args.retries is not None else retries,
            args.budget_gpus or table.budget.get("gpus"),
            args.budget_hours or table.budget.get("hours"),
        )
    except ConfigError as err:
        raise InputError(args.configfile[-1] if args.configfile else "config", str(err)) from None
    plan.header = [
        "- config: the workflow's (config files and --config, as rule capacity passes it)"
        if args.config_json
        else f"- config: config/config.yaml{''.join(f' + {p}' for p in args.configfile)}",
        f"- resource map: {', '.join(maps) or 'none (local classes)'}",
        f"- throughput: {shown(args.throughput)}",
    ]
    text = markdown(plan)
    print(text, end="")
    if args.md:
        write_text(args.md, text)
    if args.csv:
        write_text(args.csv, csv_text(plan))
    fits, _ = plan.verdict()
    log.info(
        "%d GPU jobs, %.1f GPU-hours%s",
        len(plan.estimates),
        plan.gpu_hours,
        "" if fits is None else (", fits the budget" if fits else ", does NOT fit the budget"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configfile",
        type=Path,
        nargs="*",
        default=[],
        help="config files merged over config/config.yaml, as snakemake --configfile",
    )
    parser.add_argument(
        "--config-json", metavar="JSON", help="the whole config as JSON (what rule capacity passes)"
    )
    parser.add_argument(
        "--profile", type=Path, help="Snakemake profile folder: its resource maps and retries"
    )
    parser.add_argument(
        "--resource-map",
        type=Path,
        nargs="*",
        default=[],
        help="resource map files (default: the profile's; none - local classes)",
    )
    parser.add_argument(
        "--retries", type=int, help="retries after a time-out (default: the profile's, else 0)"
    )
    parser.add_argument(
        "--throughput",
        type=Path,
        default=ROOT / "config" / "throughput.yaml",
        help="throughput table (default %(default)s)",
    )
    parser.add_argument("--device", help="device of the throughput entries (default: the table's)")
    parser.add_argument(
        "--budget-gpus", type=int, help="GPUs of the budget (default: the table's `budget`)"
    )
    parser.add_argument(
        "--budget-hours", type=float, help="hours of the budget, wall time (default: the table's)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="workflow folder whose results/ hold prepared data to count",
    )
    parser.add_argument("--md", type=Path, help="plan Markdown to write")
    parser.add_argument("--csv", type=Path, help="plan CSV to write (one row per GPU job)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=cmd_plan)
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(build_parser))
