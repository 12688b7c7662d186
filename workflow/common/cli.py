"""Command-line plumbing shared by ``scripts/<track>.py``: logging and clean input errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workflow.common.config import ConfigError, load_schema, schema_default, stage_settings
from workflow.common.errors import InputError
from workflow.common.images import set_max_pixels

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


def add_settings(parser: argparse.ArgumentParser, definition: str, what: str) -> None:
    """``--settings JSON``: the stage's config section, checked against the schema's
    ``$defs/<definition>`` before the stage runs; omitted keys take the schema's defaults."""
    parser.add_argument(
        "--settings",
        default="{}",
        metavar="JSON",
        help=f"{what} as a JSON object (config/schema/{load_schema().homes[definition]} "
        f"$defs/{definition}; "
        "omitted keys take their defaults)",
    )
    parser.set_defaults(settings_definition=definition)


def demo_stage(stage: Callable[..., argparse.ArgumentParser], func: Callable, track: str,
               help_text: str) -> None:  # fmt: skip
    """The ``demo`` stage every track has (``stage`` from :func:`stage_parser`): the dataset
    folder to write and the config's ``<track>.demo`` section (``$defs/<track>_demo``)."""
    parser = stage("demo", func, help_text)
    parser.add_argument("--root", type=Path, required=True, help="dataset folder to write")
    add_settings(parser, f"{track}_demo", f"the config's {track}.demo section")


def add_run_args(parser: argparse.ArgumentParser, settings: str | None = None) -> None:
    """What every training stage takes besides its data: the undeclared run folder that keeps
    ``last.ckpt`` across reruns, the published checkpoint, the seed and the DDP layout (read
    back as a ``RunTarget``), and with ``settings`` (a ``$defs`` name) the experiment's."""
    if settings:
        add_settings(parser, settings, "the experiment's settings (train section + overrides)")
    parser.add_argument(
        "--run-dir", type=Path, required=True,
        help="undeclared folder for resumable checkpoints and logs",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="final checkpoint to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--devices", "--gpus", type=int, default=0,
        help="GPUs per node, one DDP process each (0: CPU; without CUDA: CPU processes)",
    )  # fmt: skip
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes of the DDP run")


def add_evaluate_args(parser: argparse.ArgumentParser, settings: str | None = None) -> None:
    """What every evaluation stage takes besides its data: the checkpoint, the two outputs the
    report and figures read, and the run's identity recorded in metrics.json (with
    ``settings``, a ``$defs`` name, the experiment's settings too)."""
    if settings:
        add_settings(parser, settings, "the experiment's settings, recorded with the metrics")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    parser.add_argument(
        "--predictions", type=Path, required=True, help="predictions Parquet to write"
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--seed", type=int, default=0)


def add_bad_sample_args(
    parser: argparse.ArgumentParser,
    skipped: str | None = None,
    *,
    sample: str = "sample",
    default: str = "",
    required: bool = False,
) -> None:
    """``--on-bad-sample`` (skip or fail a damaged ``sample``) and, with ``skipped`` (what is
    listed), the ``--skipped`` TSV where the dropped ones go (``default``: where, when it is
    not given; or ``required``)."""
    parser.add_argument(
        "--on-bad-sample", choices=["skip", "fail"], default="skip",
        help=f"what to do with a damaged {sample} (default: skip, count and list it)",
    )  # fmt: skip
    if skipped:
        where = f" (default: {default})" if default else ""
        parser.add_argument("--skipped", type=Path, required=required,
                            help=f"TSV listing the {skipped} skipped{where}")  # fmt: skip


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels``: the limit of the shared image decoder (workflow/common/images.py);
    its default is the config's ``max_image_pixels`` default."""
    parser.add_argument(
        "--max-pixels", type=int, default=schema_default("max_image_pixels"), metavar="N",
        help="images whose header claims more pixels are refused undecoded "
        "(decompression bombs; default %(default)s)",
    )  # fmt: skip


def stage_parser(
    doc: str | None,
) -> tuple[argparse.ArgumentParser, Callable[..., argparse.ArgumentParser]]:
    """A track script's parser (its docstring as description, ``-v``) and ``stage(name, func,
    help)``, which adds one subcommand that runs ``func``."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(title="stages", metavar="STAGE")

    def stage(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    return parser, stage


def parse_settings(text: str, definition: str, option: str = "--settings") -> dict:
    """A JSON config section given as ``option``, checked against ``$defs/<definition>``."""
    try:
        return stage_settings(json.loads(text), definition)
    except json.JSONDecodeError as err:
        raise InputError(option, f"not JSON: {err}") from None
    except ConfigError as err:
        raise InputError(option, str(err)) from None


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
    stderr = sys.stderr = _LineTracking(sys.stderr)
    try:
        setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
        if getattr(args, "max_pixels", None) is not None:
            set_max_pixels(args.max_pixels)
        if definition := getattr(args, "settings_definition", None):
            args.settings = parse_settings(args.settings, definition)
        args.func(args)
    except InputError as err:
        newline = "" if stderr.at_line_start else "\n"
        print(f"{newline}error: {err.path}: {err.problem}", file=stderr, flush=True)
        return 2
    finally:
        sys.stderr = stderr.stream
    return 0


class _LineTracking:
    """stderr, remembering whether what it wrote last ended a line: a progress bar redraws
    with ``\r`` and no newline, and the ``error:`` line must not share its line in a log."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
