"""Command-line plumbing shared by ``scripts/<track>.py``: logging and clean input errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from workflow.common.errors import InputError

log = logging.getLogger("lsai")


def setup_logging(level: int = logging.INFO) -> None:
    """One timestamped format for every rule log, so logs read the same across tracks."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def run_cli(
    build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None
) -> int:
    """Parse arguments and call ``args.func(args)``.

    An ``InputError`` becomes ``error: <path>: <problem>`` on stderr and exit status 2,
    without a traceback: bad input is the user's to fix, not a bug to debug.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        args.func(args)
    except InputError as err:
        print(f"error: {err.path}: {err.problem}", file=sys.stderr, flush=True)
        return 2
    return 0
