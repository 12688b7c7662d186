#!/usr/bin/env python
"""Generation slowdown from the watermark processor: tokens/s with and without it, in one run.

The same prompts are completed by the same model, alternating plain and watermarked rounds
(so drifting clocks hit both alike); the best round of each counts. The issue's target is a
slowdown of at most 10% on a GPU. With ``--model`` it loads a Hugging Face folder (the demo's
LM, or OPT-1.3B on the cluster); without it, a randomly initialised GPT-2 of ``--size``
(nothing is downloaded either way).

    python tests/benchmarks/watermark_generate_benchmark.py                    # CPU, small GPT-2
    python tests/benchmarks/watermark_generate_benchmark.py --size gpt2 --batch 64 --device cuda
    python tests/benchmarks/watermark_generate_benchmark.py --model /path/to/opt-1.3b --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LogitsProcessorList

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflow.watermark.processor import WatermarkLogitsProcessor  # noqa: E402

#: GPT-2 shapes for ``--size`` (vocabulary 50257 as GPT-2's, so green lists cost what they will).
SIZES = {
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 128},
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768},
}


def model_and_vocab(args: argparse.Namespace) -> tuple[torch.nn.Module, int]:
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True)
        return model, int(model.config.vocab_size)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=1024, **SIZES[args.size])
    return GPT2LMHeadModel(config), config.vocab_size


def tokens_per_second(model, prompts, new_tokens, processors, sampling) -> float:
    if prompts.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    model.generate(
        input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, logits_processor=processors, pad_token_id=0, **sampling,
    )  # fmt: skip
    if prompts.device.type == "cuda":
        torch.cuda.synchronize()
    return prompts.shape[0] * new_tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a Hugging Face model folder (default: random GPT-2)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=50, help="prompt tokens")
    parser.add_argument("--new", type=int, default=200, help="new tokens per completion")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scheme", default="lefthash", choices=["lefthash", "selfhash"])
    parser.add_argument("--beams", type=int, default=0, help="beam search with N beams")
    parser.add_argument(
        "--draw", default="auto", choices=["auto", "cpu", "vectorised"],
        help="where green lists are drawn (auto: all at once on a GPU; greenlist_benchmark.py)",
    )  # fmt: skip
    args = parser.parse_args()
    model, vocab = model_and_vocab(args)
    model = model.to(args.device).eval()
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, vocab, (args.batch, args.prompt), generator=generator)
    prompts = prompts.to(args.device)
    sampling = ({"do_sample": False, "num_beams": args.beams} if args.beams
                else {"do_sample": True, "temperature": 0.7, "top_k": 0})  # fmt: skip
    processor = WatermarkLogitsProcessor(vocab, 0.25, 2.0, args.scheme, draw=args.draw)
    watermark = LogitsProcessorList([processor])
    best = {"plain": 0.0, "watermarked": 0.0}
    with torch.no_grad():
        tokens_per_second(model, prompts[:2], 4, None, sampling)  # warm-up
        for _ in range(args.rounds):
            for name, processors in (("plain", None), ("watermarked", watermark)):
                torch.manual_seed(0)
                rate = tokens_per_second(model, prompts, args.new, processors, sampling)
                best[name] = max(best[name], rate)
    what = args.model or f"random GPT-2 {args.size}"
    decoding = f"beam {args.beams}" if args.beams else "multinomial"
    print(f"{what} on {args.device}, batch {args.batch}, {args.new} new tokens, {args.scheme}, "
          f"{decoding}, lists drawn: {args.draw}")  # fmt: skip
    for name, rate in best.items():
        print(f"{name:>12}: {rate:9.0f} tokens/s")
    slowdown = 1 - best["watermarked"] / best["plain"]
    print(f"slowdown from the processor: {slowdown:.1%} (target <= 10% on a GPU)")


if __name__ == "__main__":
    main()
