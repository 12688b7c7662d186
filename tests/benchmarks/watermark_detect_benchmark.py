#!/usr/bin/env python
"""Watermark detection throughput: vectorised ``score_many`` vs a per-token loop, in one process.

The texts are Zipf-distributed token ids (word frequencies in text are Zipfian, so contexts
repeat as they do in real text) over a GPT-2-sized vocabulary. Three detectors score them:

* ``loop``: the published procedure token by token, as the reference detector without its cache:
  seed a generator from the context, draw the permutation, test the token;
* ``loop+cache``: the same with an LRU cache per n-gram (what the reference detector does);
* ``vectorised``: ``workflow.watermark.detect.score_many`` (one permutation per unique seed over
  all texts, membership by gathers), with a cold mask cache.

All three must give the same green counts (checked); it prints tokens/s and the ratios.

    python tests/benchmarks/watermark_detect_benchmark.py
    python tests/benchmarks/watermark_detect_benchmark.py --scheme selfhash --texts 100
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflow.watermark import greenlist  # noqa: E402
from workflow.watermark.detect import score_many  # noqa: E402
from workflow.watermark.greenlist import DEFAULT_KEY, prf_seeds  # noqa: E402


def zipf_texts(n: int, length: int, vocab: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.3, size=(n, length)) - 1
    permutation = rng.permutation(vocab)  # frequent words are not the low ids
    return list(permutation[np.minimum(ranks, vocab - 1)])


def loop_green(
    texts: list[np.ndarray], vocab: int, gamma: float, scheme: str, prefix: int, cache: bool
) -> int:
    """Green count by a per-token loop: one permutation per scored token (or per n-gram)."""
    sch = greenlist.scheme(scheme)

    def green(ngram: tuple[int, ...]) -> bool:
        window = torch.tensor(ngram if sch.self_salt else ngram[:-1])
        seed = int(prf_seeds(window[None], sch, DEFAULT_KEY)[0])
        return bool((greenlist.green_list(seed, vocab, gamma) == ngram[-1]).any())

    if cache:
        green = functools.lru_cache(maxsize=None)(green)
    total = 0
    for ids in texts:
        ids = ids.tolist()
        for t in range(max(prefix, sch.lookback), len(ids)):
            total += green(tuple(ids[t - sch.lookback : t + 1]))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200, help="texts scored (default 200)")
    parser.add_argument("--loop-texts", type=int, default=20,
                        help="texts the uncached loop scores (it is slow; default 20)")  # fmt: skip
    parser.add_argument("--length", type=int, default=250, help="tokens per text, prompt included")
    parser.add_argument("--prompt", type=int, default=50, help="prompt tokens, not scored")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary size (GPT-2's)")
    parser.add_argument("--gamma", type=float, default=0.25)
    parser.add_argument("--scheme", default="lefthash", choices=sorted(greenlist.SCHEMES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = zipf_texts(args.texts, args.length, args.vocab, seed=0)
    scored = args.length - max(args.prompt, greenlist.scheme(args.scheme).lookback)

    rates, greens = {}, {}
    for name, subset, run in (
        ("loop", texts[: args.loop_texts],
         lambda ts: loop_green(ts, args.vocab, args.gamma, args.scheme, args.prompt, False)),
        ("loop+cache", texts,
         lambda ts: loop_green(ts, args.vocab, args.gamma, args.scheme, args.prompt, True)),
        ("vectorised", texts,
         lambda ts: sum(s.green for s in score_many(ts, args.vocab, args.gamma, args.scheme,
                                                    prefix_len=args.prompt))),
    ):  # fmt: skip
        greenlist._cached_mask.cache_clear()  # every detector starts cold
        started = time.perf_counter()
        greens[name] = run(subset)
        seconds = time.perf_counter() - started
        rates[name] = len(subset) * scored / seconds
        print(f"{name:>11}: {len(subset) * scored:7d} tokens in {seconds:7.2f} s = "
              f"{rates[name]:9.0f} tokens/s")  # fmt: skip

    share = args.loop_texts / args.texts
    check = loop_green(texts[: args.loop_texts], args.vocab, args.gamma, args.scheme,
                       args.prompt, True)  # fmt: skip
    assert greens["loop"] == check, (greens["loop"], check)
    assert greens["loop+cache"] == greens["vectorised"], greens
    print(f"green counts agree ({greens['vectorised']} of {args.texts * scored} tokens; "
          f"loop on {share:.0%} of the texts)")  # fmt: skip
    print(f"vectorised / loop: {rates['vectorised'] / rates['loop']:.1f}x; "
          f"vectorised / loop+cache: {rates['vectorised'] / rates['loop+cache']:.1f}x "
          f"({args.scheme}, vocabulary {args.vocab}, {args.threads} thread(s))")  # fmt: skip


if __name__ == "__main__":
    main()
