#!/usr/bin/env python
"""Green lists per generation step: one CPU ``randperm`` per seed vs all seeds at once.

Times the watermark processor alone (no model) on random scores over a GPT-2-sized vocabulary,
as one generation step sees it: ``--batch`` rows with fresh contexts each step (so the CPU
way's cache does not help: real contexts rarely repeat), for ``lefthash`` (a list per row) and
``selfhash`` (a list per row and candidate: 40 per row). Both ways run in this one process on
the CPU and, when CUDA is available, on the GPU, after a warm-up step; the ratio is printed.
For the slowdown of whole generations against unwatermarked ones, see
watermark_generate_benchmark.py (``--draw``).

    python tests/benchmarks/greenlist_benchmark.py
    python tests/benchmarks/greenlist_benchmark.py --batch 32 --steps 5 --vocab 50272
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflow.watermark.processor import WatermarkLogitsProcessor  # noqa: E402


def ms_per_step(processor, batch: int, vocab: int, steps: int, device: str) -> float:
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 1):  # step 0 warms up
        ids = torch.randint(0, vocab, (batch, 8), generator=generator).to(device)
        scores = torch.randn(batch, vocab, generator=generator).to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        processor(ids, scores)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--gamma", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    print(f"batch {args.batch}, vocabulary {args.vocab}, gamma {args.gamma}, "
          f"median of {args.steps} steps; ms per step")  # fmt: skip
    for device in devices:
        for scheme in ("lefthash", "selfhash"):
            ms = {}
            for draw in ("cpu", "vectorised"):
                processor = WatermarkLogitsProcessor(args.vocab, args.gamma, 2.0, scheme, draw=draw)
                ms[draw] = ms_per_step(processor, args.batch, args.vocab, args.steps, device)
            print(f"{device:>4} {scheme:>8}: one randperm per seed {ms['cpu']:9.1f}   "
                  f"all at once {ms['vectorised']:9.1f}   "
                  f"ratio {ms['cpu'] / ms['vectorised']:6.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
