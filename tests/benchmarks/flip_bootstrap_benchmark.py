#!/usr/bin/env python
"""FLIP comparison bootstrap at ImageNet's size: peak memory and time of the blocked resampling
(``workflow.flip.compare.bootstrap_means``) against drawing every resample in one call, in
one process, on the same per-image differences; both give the same means.

    python tests/benchmarks/flip_bootstrap_benchmark.py --images 50000 --resamples 4000
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from workflow.flip.compare import RESAMPLES, bootstrap_means  # noqa: E402


def one_call(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return values[rng.integers(values.size, size=(resamples, values.size))].mean(axis=1)


def measure(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """(result, seconds, peak MB of numpy allocations)."""
    tracemalloc.start()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000, help="val images (ImageNet: 50,000)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    args = parser.parse_args()
    # per-image top-1 difference of two models: -1, 0 or +1
    values = np.random.default_rng(1).choice([-1.0, 0.0, 1.0], args.images, p=[0.1, 0.8, 0.1])
    blocked, t_blocked, m_blocked = measure(
        lambda: bootstrap_means(values, args.resamples, np.random.default_rng(0))
    )
    whole, t_whole, m_whole = measure(
        lambda: one_call(values, args.resamples, np.random.default_rng(0))
    )
    print(f"{args.images} images x {args.resamples} resamples")
    print(f"one call: {t_whole:6.2f} s, peak {m_whole:8.1f} MB")
    print(f"blocked:  {t_blocked:6.2f} s, peak {m_blocked:8.1f} MB")
    print(f"memory ratio {m_whole / m_blocked:.1f}x, time ratio {t_blocked / t_whole:.2f}")
    print(f"same means: {np.array_equal(whole, blocked)}")


if __name__ == "__main__":
    main()
