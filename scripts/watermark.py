#!/usr/bin/env python
"""Watermarking LLM output (Kirchenbauer et al. 2023): one subcommand per stage.

Each subcommand also runs by hand, e.g. ``python scripts/watermark.py detect --help``. Models
are local Hugging Face folders (``AutoModelForCausalLM.from_pretrained(path)``; nothing is
downloaded); documents are C4 ``realnewslike`` JSONL files (``.json.gz`` or plain), one
``{"text": ...}`` object a line.
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
    from workflow.watermark.demo import write_demo

    manifest = write_demo(args.root, args.settings)
    log.info(
        "demo: %d documents (%d too short for a prompt, %d broken lines) -> %s",
        manifest["records"], manifest["short_documents"], manifest["bad_lines"], args.root,
    )  # fmt: skip


def cmd_lm(args: argparse.Namespace) -> None:
    from workflow.watermark.stages import lm_stage

    lm_stage(args.settings, RunTarget.from_args(args), args.threads)


def cmd_prompts(args: argparse.Namespace) -> None:
    from workflow.watermark.stages import prompts_stage

    prompts_stage(args.documents, args.model, args.settings, args.out, args.counts, args.skipped,
                  args.on_bad_sample)  # fmt: skip


def cmd_generate(args: argparse.Namespace) -> None:
    from workflow.watermark.stages import generate_stage

    generate_stage(args.prompts, args.model, args.settings, args.out, args.info, args.seed)


def cmd_attack(args: argparse.Namespace) -> None:
    from workflow.watermark.stages import attack_stage

    attacks = cli.parse_settings(args.attacks, "watermark_attacks", "--attacks")
    attack_stage(args.generations, args.model, attacks, args.out, args.seed)


def cmd_paraphrase(args: argparse.Namespace) -> None:
    from workflow.watermark.stages import paraphrase_stage

    paraphrase_stage(args.generations, args.model, args.paraphraser, args.settings, args.out,
                     args.seed)  # fmt: skip


def cmd_detect(args: argparse.Namespace) -> None:
    detect = cli.parse_settings(args.detect, "watermark_detect", "--detect")
    if args.text is not None:
        from workflow.watermark.stages import detect_text_stage

        detect_text_stage(args.text, args.model, args.settings, detect, args.json)
        return
    missing = [f"--{n}" for n in ("generations", "attacked", "out") if getattr(args, n) is None]
    if missing:
        raise InputError("detect", f"give --text FILE (or -), or the stage's {', '.join(missing)}")
    from workflow.watermark.stages import detect_stage

    detect_stage(args.generations, args.attacked, args.model, args.settings, detect, args.out)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from workflow.common.metrics import RunEvaluation
    from workflow.watermark.evaluate import evaluate_stage

    evaluate_stage(
        RunEvaluation.from_args("watermark", args), args.scores, args.generations,
        cli.parse_settings(args.detect, "watermark_detect", "--detect"), args.info, args.oracle,
        args.attacked,
    )  # fmt: skip


def cmd_figures(args: argparse.Namespace) -> None:
    from workflow.watermark.stages import figures_stage

    figures_stage(args.metrics, args.scores, args.out)


def add_model(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--model", type=Path, required=True, help=f"Hugging Face folder: {what}")


def add_edit(parser: argparse.ArgumentParser, model: str, edited: str) -> None:
    """An attack stage's arguments: the generations it edits, the LM whose tokenizer it uses,
    the edited .jsonl it writes and its seed."""
    parser.add_argument("--generations", type=Path, required=True)
    add_model(parser, model)
    parser.add_argument("--out", type=Path, required=True, help=f"{edited} .jsonl to write")
    parser.add_argument("--seed", type=int, default=0)


def add_detect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--detect", default="{}", metavar="JSON",
        help="the config's watermark.detect section (schema $defs/watermark_detect)",
    )  # fmt: skip


def add_generation_settings(parser: argparse.ArgumentParser) -> None:
    cli.add_settings(
        parser, "watermark_train", "the experiment's settings (train section + overrides)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser, stage = cli.stage_parser(__doc__)

    cli.demo_stage(
        stage, cmd_demo, "watermark", "write seeded C4-style documents (.json.gz) and manifest.json"
    )

    p = stage("lm", cmd_lm, "train the demo's BPE tokenizer and GPT-2 on generated documents "
              "and save them as a Hugging Face folder")  # fmt: skip
    cli.add_settings(p, "watermark_lm", "the config's watermark.lm section")
    p.add_argument("--run-dir", type=Path, required=True,
                   help="undeclared folder for resumable checkpoints")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")

    p = stage("prompts", cmd_prompts, "documents -> prompts + human completions (JSONL)")
    p.add_argument("--documents", type=Path, nargs="+", required=True,
                   help="C4 JSONL files (.json.gz or plain), read in order")  # fmt: skip
    add_model(p, "its tokenizer cuts the documents")
    cli.add_settings(p, "watermark_prompts", "the config's watermark.prompts section")
    p.add_argument("--out", type=Path, required=True, help="prompts .jsonl to write")
    p.add_argument(
        "--counts", type=Path, help="counts .json to write (default: beside --out, .counts.json)"
    )
    cli.add_bad_sample_args(p, "malformed lines", default="beside --out, .skipped.tsv")

    p = stage(
        "generate",
        cmd_generate,
        "watermarked and unwatermarked completions of every prompt (GPU when present)",
    )
    p.add_argument("--prompts", type=Path, required=True)
    add_model(p, "the generating LM")
    add_generation_settings(p)
    p.add_argument("--out", type=Path, required=True, help="generations .jsonl to write")
    p.add_argument("--info", type=Path, required=True, help="speed record (.json) to write")
    p.add_argument("--seed", type=int, default=0)

    p = stage("attack", cmd_attack, "edit the watermarked completions' text: word substitution, "
              "deletion, insertion at each rate; copy-paste of 1 or 3 watermarked spans into "
              "the human text")  # fmt: skip
    add_edit(p, "the generator (its tokenizer cuts the copy-paste spans)", "attacked")
    p.add_argument(
        "--attacks", default="{}", metavar="JSON", help="the config's watermark.attacks section"
    )

    p = stage("paraphrase", cmd_paraphrase, "the paraphrase attack: a second LM resamples a "
              "fraction epsilon of each watermarked completion's tokens in context")  # fmt: skip
    add_edit(p, "the generator (it checks the generations' token ids)", "paraphrased")
    p.add_argument("--paraphraser", type=Path, required=True,
                   help="Hugging Face folder of the paraphrasing LM")  # fmt: skip
    cli.add_settings(p, "watermark_paraphrase", "the config's watermark.paraphrase section")

    p = stage("detect", cmd_detect, "z-scores of every text, read as text (whole, cut to "
              "shorter lengths, attacked), and WinMax z -> a Parquet table; or, with --text, "
              "whether one text is watermarked")  # fmt: skip
    p.add_argument("--text", help="a text file to judge (- reads standard input): prints its "
                   "z, p-value, green fraction and verdict")  # fmt: skip
    p.add_argument("--json", action="store_true", help="with --text: one JSON object")
    p.add_argument("--generations", type=Path, help="the generate stage's .jsonl (stage)")
    p.add_argument("--attacked", type=Path, nargs="+",
                   help="the attack (and paraphrase) stages' .jsonl files (stage)")  # fmt: skip
    add_model(p, "the generator's tokenizer (the green lists' vocabulary)")
    add_generation_settings(p)
    add_detect(p)
    p.add_argument("--out", type=Path, help="scores .parquet to write (stage)")

    p = stage(
        "evaluate",
        cmd_evaluate,
        "TPR at the z threshold, FPR on human and plain text, "
        "ROC-AUC (z and WinMax), TPR at 1%% FPR, oracle perplexity, attack curves with AUC, "
        "calibrated TPR, perplexity and similarity -> metrics.json",
    )
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument("--generations", type=Path, required=True)
    p.add_argument("--info", type=Path, help="the generate stage's speed record")
    p.add_argument("--oracle", type=Path, help="Hugging Face folder of the perplexity oracle")
    p.add_argument("--attacked", type=Path, nargs="*", default=[],
                   help="the attack stages' .jsonl files: with --oracle, each attack rate's "
                   "perplexity and similarity to the original")  # fmt: skip
    add_generation_settings(p)
    add_detect(p)
    p.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    p.add_argument("--dataset", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--seed", type=int, default=0)

    p = stage("figures", cmd_figures, "z histograms and ROC, z vs T, attack curves")
    p.add_argument("--metrics", type=Path, nargs="+", required=True)
    p.add_argument("--scores", type=Path, nargs="+", required=True,
                   help="each run's scores.parquet, in the order of --metrics")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="folder of the figures")
    return parser


if __name__ == "__main__":
    sys.exit(cli.run_cli(build_parser))
