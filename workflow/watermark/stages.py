"""The watermark track's stages, one function each (scripts/watermark.py parses the options and
calls one): what reads the inputs, runs the library and writes the outputs, with the checks
and the log lines a stage owes its user."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from workflow.common.atomic import atomic_path, write_json, write_text
from workflow.common.errors import InputError, first_line
from workflow.common.target import RunTarget
from workflow.watermark.hf import load_lm, load_tokenizer, vocabulary_size
from workflow.watermark.records import (
    read_attacked,
    read_generations,
    write_records,
)

log = logging.getLogger("lsai.watermark.stages")


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def lm_stage(settings: Mapping[str, Any], target: RunTarget, threads: int = 0) -> dict:
    """The demo LM: a BPE tokenizer and GPT-2 trained on ``settings['documents']`` generated
    documents (seed ``settings['seed']``); its record goes beside the checkpoints (lm.json)."""
    from workflow.watermark.corpus import documents
    from workflow.watermark.lm import train_lm

    settings = dict(settings)
    count, seed = int(settings.pop("documents")), int(settings.pop("seed"))
    if threads:
        torch.set_num_threads(threads)
    texts = documents(count, seed)
    log.info("training the demo LM on %d generated documents (seed %d)", count, seed)
    info = train_lm(texts, settings, target)
    write_json(target.run_dir / "lm.json", info)
    log.info("demo LM: val perplexity %.2f, %d parameters, %.0f s -> %s",
             info["val_ppl"], info["parameters"], info["wall_time_s"], target.final)  # fmt: skip
    return info


def prompts_stage(
    documents: Sequence[Path],
    model: Path,
    settings: Mapping[str, Any],
    out: Path,
    counts: Path | None = None,
    skipped: Path | None = None,
    policy: str = "skip",
) -> None:
    """Prompts and human completions cut from ``documents`` by ``model``'s tokenizer, with
    the counts and the skipped lines beside ``out`` unless given."""
    from workflow.watermark.prompts import make_prompts, prompts_jsonl

    prompts, tally = make_prompts(documents, load_tokenizer(model), settings, policy)
    if not prompts:
        raise InputError(documents[0], f"no document gives a prompt of at least "
                         f"{settings['min_prompt_tokens']} tokens plus a "
                         f"{settings['completion_tokens']}-token completion")  # fmt: skip
    if len(prompts) < int(settings["n"]):
        log.warning("only %d prompts of the %d asked for", len(prompts), settings["n"])
    write_text(out, prompts_jsonl(prompts))
    write_json(counts or out.with_suffix(".counts.json"), tally.as_dict())
    write_text(skipped or out.with_suffix(".skipped.tsv"), tally.skipped.to_tsv())
    log.info("prompts: %s -> %s", tally.as_dict(), out)


def generate_stage(
    prompts_path: Path,
    model_path: Path,
    settings: Mapping[str, Any],
    out: Path,
    info_path: Path,
    seed: int = 0,
) -> dict:
    """Watermarked and plain completions of every prompt (GPU when there is one) and the speed
    record of both (tokens/s, the watermark's slowdown)."""
    from workflow.watermark.generate import complete, generation_records
    from workflow.watermark.prompts import read_prompts

    prompts = read_prompts(prompts_path)
    model, tokenizer = load_lm(model_path)
    limit = int(getattr(model.config, "n_positions", 0) or model.config.max_position_embeddings)
    longest = max(len(p.prompt_ids) for p in prompts) + int(settings["new_tokens"])
    if longest > limit:
        raise InputError(prompts_path, f"a prompt plus {settings['new_tokens']} new tokens is "
                         f"{longest} tokens, beyond the model's {limit} positions: lower "
                         "prompts.max_prompt_tokens")  # fmt: skip
    device = _device()
    if device == "cuda" and settings["precision"] == "bf16":
        model = model.to(torch.bfloat16)
    model = model.to(device)
    log.info("%d prompts on %s: %s", len(prompts), device, settings)
    started = time.monotonic()
    # warm-up, untimed, both ways: the first call's one-off costs (kernels, allocator, the
    # green lists' hash table) would otherwise land in whichever timed run came first
    for watermark in (True, False):
        complete(model, tokenizer, prompts[:1], {**settings, "new_tokens": 4}, watermark, seed)
    marked, marked_speed = complete(model, tokenizer, prompts, settings, True, seed)
    plain, plain_speed = complete(model, tokenizer, prompts, settings, False, seed)
    write_records(out, generation_records(prompts, marked, plain))
    info = {
        "tokens_per_s_marked": marked_speed, "tokens_per_s_plain": plain_speed,
        "slowdown": plain_speed / marked_speed - 1.0, "device": device,
        "prompts": len(prompts), "train_wall_time_s": time.monotonic() - started,
    }  # fmt: skip
    write_json(info_path, info)
    log.info("generated %d x 2 completions: %.0f tokens/s watermarked, %.0f plain (%+.1f%%)",
             len(prompts), marked_speed, plain_speed, 100 * info["slowdown"])  # fmt: skip
    return info


def attack_stage(
    generations_path: Path, model: Path, attacks: Mapping[str, Any], out: Path, seed: int = 0
) -> None:
    """Every attack with a rate (word substitution, deletion, insertion; copy-paste of one or
    three spans) on the text of every watermarked completion; ``model``'s tokenizer cuts the
    copy-paste spans."""
    from workflow.watermark.attacks import attack_records

    tokenizer = load_tokenizer(model)
    generations = read_generations(generations_path, vocabulary_size(tokenizer))
    chosen = {name: eps for name, eps in attacks.items() if eps}
    try:
        records = attack_records(generations, chosen, tokenizer, seed)
    except ValueError as err:  # a copy-paste span too long for the completions
        raise InputError("--attacks", str(err)) from None
    write_records(out, records)
    log.info("attacks %s on %d texts -> %d attacked texts in %s",
             ", ".join(chosen), len(generations), len(records), out)  # fmt: skip


def paraphrase_stage(
    generations_path: Path,
    model: Path,
    paraphraser: Path,
    settings: Mapping[str, Any],
    out: Path,
    seed: int = 0,
) -> None:
    """The paraphrase attack: ``paraphraser`` resamples a fraction epsilon of each watermarked
    completion's tokens in context (``model``, the generator, only checks the records)."""
    from workflow.watermark.paraphrase import paraphrase_records

    generations = read_generations(generations_path, vocabulary_size(load_tokenizer(model)))
    lm, tokenizer = load_lm(paraphraser)
    device = _device()
    started = time.monotonic()
    records = paraphrase_records(
        lm.to(device), tokenizer, generations, settings["epsilons"], settings, seed
    )
    write_records(out, records)
    log.info("paraphrased %d texts at epsilon %s with %s on %s in %.1f s -> %s",
             len(generations), settings["epsilons"], paraphraser, device,
             time.monotonic() - started, out)  # fmt: skip


def detect_stage(
    generations_path: Path,
    attacked_paths: Sequence[Path],
    model: Path,
    settings: Mapping[str, Any],
    detect: Mapping[str, Any],
    out: Path,
) -> None:
    """The z-score table of every text, read as text (whole, cut to shorter lengths,
    attacked; WinMax z of the whole and attacked ones) as Parquet."""
    from workflow.watermark.scoring import score_table

    tokenizer = load_tokenizer(model)
    generations = read_generations(generations_path, vocabulary_size(tokenizer))
    attacked = read_attacked(attacked_paths, {g["id"] for g in generations})
    started = time.monotonic()
    table = score_table(generations, attacked, settings, detect, tokenizer)
    seconds = time.monotonic() - started
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    tokens = int(table.tokens.sum())
    log.info("scored %d texts (%d tokens) in %.1f s (%.0f tokens/s); %d too short to score",
             len(table), tokens, seconds, tokens / max(seconds, 1e-9),
             int((table.problem != "").sum()))  # fmt: skip


def detect_text_stage(
    source: str, model: Path, settings: Mapping[str, Any], detect: Mapping[str, Any], as_json: bool
) -> None:
    """Judge one text (a file, or standard input for ``-``) and print the verdict."""
    import json
    import sys

    from workflow.watermark.detect import TooShort
    from workflow.watermark.textdetect import detect_text, report

    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(source, "text file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(source, f"cannot read the text: {first_line(err)}") from None
    try:
        verdict = detect_text(text, load_tokenizer(model), settings, detect)
    except TooShort as err:
        raise InputError(source, str(err)) from None
    print(json.dumps(verdict.as_dict()) if as_json else report(verdict, source), flush=True)


def figures_stage(metrics: Sequence[Path], scores: Sequence[Path], out: Path) -> None:
    """z histograms and ROC, z against length, the attack curves and the detectors' AUC under
    attack (figure and table) of every run."""
    from workflow.common.metrics import read_metrics
    from workflow.watermark.plots import (
        attack_figure,
        detection_figure,
        detector_figure,
        detector_table,
        length_figure,
        quality_figure,
    )
    from workflow.watermark.scoring import read_scores

    if len(metrics) != len(scores):
        raise InputError("--scores", "give one score table per metrics.json, in the same order")
    records = [read_metrics(path) for path in metrics]
    for path, record in zip(metrics, records, strict=True):
        extra = record.get("extra")
        if (
            record.get("track") != "watermark"
            or not isinstance(extra, dict)
            or not all(key in extra for key in ("curves", "z_threshold"))
        ):
            raise InputError(path, "not a watermark run's metrics.json (no extra.curves)")
    names = [f"{r['experiment']}" for r in records]
    tables = {n: read_scores(p) for n, p in zip(names, scores, strict=True)}
    curves = {n: r["extra"]["curves"] for n, r in zip(names, records, strict=True)}
    threshold = float(records[0]["extra"]["z_threshold"])
    out.mkdir(parents=True, exist_ok=True)
    detection_figure(tables, threshold, out / "detection.png")
    length_figure(curves, threshold, out / "z_vs_length.png")
    attack_figure(curves, threshold, out / "attacks.png")
    detector_figure(curves, out / "detectors.png")
    quality_figure(curves, out / "quality.png")
    write_text(out / "detectors.csv", detector_table(curves).to_csv(index=False))
    log.info("figures of %d runs -> %s", len(records), out)
