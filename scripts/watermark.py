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
import time
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
    import torch

    from workflow.common.atomic import write_json
    from workflow.watermark.corpus import documents
    from workflow.watermark.lm import train_lm

    settings = dict(args.settings)
    count, seed = int(settings.pop("documents")), int(settings.pop("seed"))
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = documents(count, seed)
    log.info("training the demo LM on %d generated documents (seed %d)", count, seed)
    info = train_lm(texts, settings, RunTarget.from_args(args))
    write_json(args.run_dir / "lm.json", info)
    log.info("demo LM: val perplexity %.2f, %d parameters, %.0f s -> %s",
             info["val_ppl"], info["parameters"], info["wall_time_s"], args.out)  # fmt: skip


def cmd_prompts(args: argparse.Namespace) -> None:
    from workflow.common.atomic import write_json, write_text
    from workflow.watermark.hf import load_tokenizer
    from workflow.watermark.prompts import make_prompts, prompts_jsonl

    tokenizer = load_tokenizer(args.model)
    prompts, counts = make_prompts(args.documents, tokenizer, args.settings, args.on_bad_sample)
    if not prompts:
        raise InputError(args.documents[0], f"no document gives a prompt of at least "
                         f"{args.settings['min_prompt_tokens']} tokens plus a "
                         f"{args.settings['completion_tokens']}-token completion")  # fmt: skip
    if len(prompts) < int(args.settings["n"]):
        log.warning("only %d prompts of the %d asked for", len(prompts), args.settings["n"])
    write_text(args.out, prompts_jsonl(prompts))
    write_json(args.counts or args.out.with_suffix(".counts.json"), counts.as_dict())
    write_text(args.skipped or args.out.with_suffix(".skipped.tsv"), counts.skipped.to_tsv())
    log.info("prompts: %s -> %s", counts.as_dict(), args.out)


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from workflow.common.atomic import write_json
    from workflow.watermark.generate import complete, generation_records
    from workflow.watermark.hf import load_lm
    from workflow.watermark.prompts import read_prompts
    from workflow.watermark.records import write_records

    settings = args.settings
    prompts = read_prompts(args.prompts)
    model, tokenizer = load_lm(args.model)
    limit = int(getattr(model.config, "n_positions", 0) or model.config.max_position_embeddings)
    longest = max(len(p.prompt_ids) for p in prompts) + int(settings["new_tokens"])
    if longest > limit:
        raise InputError(args.prompts, f"a prompt plus {settings['new_tokens']} new tokens is "
                         f"{longest} tokens, beyond the model's {limit} positions: lower "
                         "prompts.max_prompt_tokens")  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and settings["precision"] == "bf16":
        model = model.to(torch.bfloat16)
    model = model.to(device)
    log.info("%d prompts on %s: %s", len(prompts), device, settings)
    started = time.monotonic()
    marked, marked_speed = complete(model, tokenizer, prompts, settings, True, args.seed)
    plain, plain_speed = complete(model, tokenizer, prompts, settings, False, args.seed)
    write_records(args.out, generation_records(prompts, marked, plain))
    info = {
        "tokens_per_s_marked": marked_speed, "tokens_per_s_plain": plain_speed,
        "slowdown": plain_speed / marked_speed - 1.0, "device": device,
        "prompts": len(prompts), "train_wall_time_s": time.monotonic() - started,
    }  # fmt: skip
    write_json(args.info, info)
    log.info("generated %d x 2 completions: %.0f tokens/s watermarked, %.0f plain (%+.1f%%)",
             len(prompts), marked_speed, plain_speed, 100 * info["slowdown"])  # fmt: skip


def cmd_attack(args: argparse.Namespace) -> None:
    from workflow.watermark.attacks import attack_records
    from workflow.watermark.hf import load_tokenizer, vocabulary_size
    from workflow.watermark.records import read_generations, write_records

    vocab = vocabulary_size(load_tokenizer(args.model))
    generations = read_generations(args.generations, vocab)
    chosen = cli.parse_settings(args.attacks, "watermark_attacks", "--attacks")
    attacks = {name: eps for name, eps in chosen.items() if eps}
    records = attack_records(generations, attacks, vocab, args.seed)
    write_records(args.out, records)
    log.info("attacks %s on %d texts -> %d attacked texts in %s",
             ", ".join(attacks), len(generations), len(records), args.out)  # fmt: skip


def cmd_paraphrase(args: argparse.Namespace) -> None:
    import torch

    from workflow.watermark.hf import load_lm, load_tokenizer
    from workflow.watermark.paraphrase import paraphrase_records
    from workflow.watermark.records import read_generations, write_records

    generations = read_generations(args.generations)
    model, tokenizer = load_lm(args.paraphraser)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.monotonic()
    records = paraphrase_records(
        model.to(device), tokenizer, generations, load_tokenizer(args.model),
        args.settings["epsilons"], args.settings, args.seed,
    )  # fmt: skip
    write_records(args.out, records)
    log.info("paraphrased %d texts at epsilon %s with %s on %s in %.1f s -> %s",
             len(generations), args.settings["epsilons"], args.paraphraser, device,
             time.monotonic() - started, args.out)  # fmt: skip


def cmd_detect(args: argparse.Namespace) -> None:
    from workflow.common.atomic import atomic_path
    from workflow.watermark.hf import load_tokenizer, vocabulary_size
    from workflow.watermark.records import read_attacked, read_generations
    from workflow.watermark.scoring import score_table

    settings = args.settings
    vocab = vocabulary_size(load_tokenizer(args.model))  # ids outside it are damage
    generations = read_generations(args.generations, vocab)
    attacked = read_attacked(args.attacked, {g["id"] for g in generations}, vocab)
    started = time.monotonic()
    detect = cli.parse_settings(args.detect, "watermark_detect", "--detect")
    table = score_table(generations, attacked, settings, detect, vocab)
    seconds = time.monotonic() - started
    with atomic_path(args.out) as tmp:
        table.to_parquet(tmp, index=False)
    short = int((table.problem != "").sum())
    log.info("scored %d texts (%d tokens) in %.1f s (%.0f tokens/s); %d too short to score",
             len(table), int(table.tokens.sum()), seconds, table.tokens.sum() / max(seconds, 1e-9),
             short)  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> None:
    from workflow.common.metrics import RunEvaluation
    from workflow.watermark.evaluate import evaluate_stage

    evaluate_stage(
        RunEvaluation.from_args("watermark", args), args.scores, args.generations,
        cli.parse_settings(args.detect, "watermark_detect", "--detect"), args.info, args.oracle,
    )  # fmt: skip


def cmd_figures(args: argparse.Namespace) -> None:

    from workflow.common.metrics import read_metrics
    from workflow.watermark.plots import attack_figure, detection_figure, length_figure
    from workflow.watermark.scoring import read_scores

    if len(args.metrics) != len(args.scores):
        raise InputError("--scores", "give one score table per metrics.json, in the same order")
    records = [read_metrics(path) for path in args.metrics]
    for path, record in zip(args.metrics, records, strict=True):
        extra = record.get("extra")
        if (
            record.get("track") != "watermark"
            or not isinstance(extra, dict)
            or not all(key in extra for key in ("curves", "z_threshold"))
        ):
            raise InputError(path, "not a watermark run's metrics.json (no extra.curves)")
    names = [f"{r['experiment']}" for r in records]
    tables = {n: read_scores(p) for n, p in zip(names, args.scores, strict=True)}
    curves = {n: r["extra"]["curves"] for n, r in zip(names, records, strict=True)}
    threshold = float(records[0]["extra"]["z_threshold"])
    args.out.mkdir(parents=True, exist_ok=True)
    detection_figure(tables, threshold, args.out / "detection.png")
    length_figure(curves, threshold, args.out / "z_vs_length.png")
    attack_figure(curves, threshold, args.out / "attacks.png")
    log.info("figures of %d runs -> %s", len(records), args.out)


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

    p = stage("attack", cmd_attack, "edit the watermarked completions: substitution, deletion, "
              "insertion at each rate, copy-paste into the human text")  # fmt: skip
    add_edit(p, "its tokenizer's vocabulary gives the random tokens", "attacked")
    p.add_argument(
        "--attacks", default="{}", metavar="JSON", help="the config's watermark.attacks section"
    )

    p = stage("paraphrase", cmd_paraphrase, "the paraphrase attack: a second LM resamples a "
              "fraction epsilon of each watermarked completion's tokens in context")  # fmt: skip
    add_edit(p, "the generator (its tokenizer re-reads the paraphrased text)", "paraphrased")
    p.add_argument("--paraphraser", type=Path, required=True,
                   help="Hugging Face folder of the paraphrasing LM")  # fmt: skip
    cli.add_settings(p, "watermark_paraphrase", "the config's watermark.paraphrase section")

    p = stage("detect", cmd_detect, "z-scores of every text (whole, cut to shorter lengths, "
              "attacked) and the best window's z -> a Parquet table")  # fmt: skip
    p.add_argument("--generations", type=Path, required=True)
    p.add_argument("--attacked", type=Path, nargs="+", required=True,
                   help="the attack (and paraphrase) stages' .jsonl files")  # fmt: skip
    add_model(p, "the generator's tokenizer (the green lists' vocabulary)")
    add_generation_settings(p)
    add_detect(p)
    p.add_argument("--out", type=Path, required=True, help="scores .parquet to write")

    p = stage(
        "evaluate",
        cmd_evaluate,
        "TPR at the z threshold, FPR on human and plain text, "
        "ROC-AUC, TPR at 1%% FPR, oracle perplexity, attack curves -> metrics.json",
    )
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument("--generations", type=Path, required=True)
    p.add_argument("--info", type=Path, help="the generate stage's speed record")
    p.add_argument("--oracle", type=Path, help="Hugging Face folder of the perplexity oracle")
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
