#!/usr/bin/env python
"""Gene and protein expression from sequence (Perceiver vs Xpresso): one subcommand per stage.

Called by rules/sequence.smk; each subcommand also runs by hand, e.g.
``python scripts/sequence.py encode --help``. Tasks: ``mrna`` (DNA -> mRNA level),
``protein`` (protein sequence -> protein level), ``joint`` (DNA + protein -> protein level).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workflow.common import cli
from workflow.common.cli import log
from workflow.common.errors import InputError
from workflow.common.metrics import RunEvaluation, predictions_by_experiment
from workflow.common.target import RunTarget


def cmd_demo(args: argparse.Namespace) -> None:
    from workflow.common.config import settings_object
    from workflow.sequence.demo import DemoSettings, write_demo

    manifest = write_demo(args.root, settings_object(DemoSettings, args.settings))
    log.info("demo: %d genes in %s; ceilings %s", manifest["genes"], args.root, manifest["ceiling"])


def cmd_encode(args: argparse.Namespace) -> None:
    from workflow.sequence.encode import SOURCES, encode_stage

    inputs = {name: getattr(args, name) for name in SOURCES}
    encode_stage(
        inputs, args.xpresso, args.out, args.skipped, args.settings, args.on_bad_sample,
        args.abundance_scale,
    )  # fmt: skip


def cmd_train(args: argparse.Namespace) -> None:
    from workflow.sequence.train import train_experiment

    train_experiment(args.settings, args.encoded, RunTarget.from_args(args))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from workflow.sequence.evaluate import evaluate_stage

    evaluate_stage(RunEvaluation.from_args("sequence", args), args.checkpoint, args.encoded)


def cmd_figures(args: argparse.Namespace) -> None:
    from workflow.sequence.plots import scatter_figure

    ceilings = {}
    if args.manifest:
        try:
            ceilings = json.loads(args.manifest.read_text()).get("ceiling", {})
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(args.manifest, f"not a readable demo manifest: {err}") from None
    scatter_figure(
        predictions_by_experiment(args.predictions, run_column="run"), args.scatter, ceilings
    )
    log.info("scatter -> %s", args.scatter)


def build_parser() -> argparse.ArgumentParser:
    parser, stage = cli.stage_parser(__doc__)

    cli.demo_stage(
        stage, cmd_demo, "sequence", "write the seeded synthetic genome, tables and proteins"
    )

    p = stage("encode", cmd_encode, "promoter windows, features and proteins -> Xpresso HDF5")
    p.add_argument("--genome", type=Path, help="genome FASTA")
    p.add_argument("--tss", type=Path, help="TSV gene_id, chrom, position, strand")
    p.add_argument(
        "--promoters", type=Path,
        help="FASTA of one promoter per gene_id, 2 x flank bp on the gene's strand with the TSS "
        "at index flank (Xpresso: 20000 bp, TSS at 10000); replaces --genome --tss",
    )  # fmt: skip
    p.add_argument("--expression", type=Path, help="TSV gene_id, expression")
    p.add_argument("--halflife", type=Path, help="TSV gene_id + 8 half-life features")
    p.add_argument("--proteins", type=Path, help="protein FASTA (one record per gene_id)")
    p.add_argument("--abundance", type=Path, help="TSV gene_id, abundance")
    p.add_argument(
        "--abundance-scale", choices=("linear", "log_ratio"), default="linear",
        help="linear: levels (label log10, 0 has none); log_ratio: log ratios as they are, "
        "negative and 0 valid (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--xpresso", type=Path, help="folder of the published Xpresso HDF5 files")
    p.add_argument("--out", type=Path, required=True, help="folder of train/valid/test.h5")
    cli.add_bad_sample_args(p, "genes", sample="gene or protein", required=True)
    cli.add_settings(p, "sequence_encode", "the config's sequence.encode section")

    p = stage("train", cmd_train, "train one experiment x seed (resumes from its run folder)")
    p.add_argument("--encoded", type=Path, required=True, help="folder of the encode stage")
    cli.add_run_args(p, "sequence_train")

    p = stage("evaluate", cmd_evaluate, "test-gene predictions and metrics.json")
    p.add_argument("--encoded", type=Path, required=True, help="folder of the encode stage")
    cli.add_evaluate_args(p, "sequence_train")

    p = stage("figures", cmd_figures, "predicted vs measured scatter of every experiment")
    p.add_argument("--predictions", type=Path, nargs="+", required=True)
    p.add_argument("--manifest", type=Path, help="demo manifest.json (its recorded ceilings)")
    p.add_argument("--scatter", type=Path, required=True, help="figure to write")
    return parser


if __name__ == "__main__":
    sys.exit(cli.run_cli(build_parser))
