#!/usr/bin/env python
"""Sequence training memory: peak RSS of training on a 20,000-gene set vs holding it as floats.

Writes ``--genes`` random genes in the track's layout (promoter bool (N, 20000, 4), chunked as
the encode stage does, lzf) in a temporary folder, then runs ``--steps`` training steps of the
``--model`` (mrna task, Xpresso's 10,500-bp window) in a child process, as the rule would,
and prints its peak resident memory next to the 4 GB target and to what the promoters alone
would take materialised as float32 (what a loader that reads everything up front holds).

    python tests/benchmarks/sequence_memory_benchmark.py --genes 20000 --steps 50
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from workflow.sequence.layout import SPLITS, create_promoter  # noqa: E402

LENGTH = 20000


def write_split(path: Path, genes: int, seed: int, block: int = 500) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        promoter = create_promoter(h5, genes, LENGTH)
        for start in tqdm(range(0, genes, block), desc=path.name, mininterval=5):
            n = min(block, genes - start)
            bases = rng.integers(0, 4, size=(n, LENGTH))
            hot = np.zeros((n, LENGTH, 4), dtype=bool)
            np.put_along_axis(hot, bases[..., None], True, axis=2)
            promoter[start : start + n] = hot
        h5["data"] = rng.normal(size=(genes, 8)).astype(np.float32)
        h5["label"] = rng.normal(size=genes).astype(np.float32)
        h5["geneName"] = np.array([f"G{i}".encode() for i in range(genes)])
        h5.attrs["flank"] = LENGTH // 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--genes", type=int, default=20000, help="training genes")
    parser.add_argument("--steps", type=int, default=50, help="training steps to run")
    parser.add_argument(
        "--model", choices=["perceiver_lsai", "dnaperceiver", "xpresso"], default="perceiver_lsai"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        sizes = {"train": args.genes, "val": 1000, "test": 1000}
        for k, (split, name) in enumerate(SPLITS.items()):
            write_split(folder / name, sizes[split], seed=k)
        print(f"wrote {sum(sizes.values())} genes in {time.perf_counter() - started:.0f} s")
        settings = {
            "model": args.model, "task": "mrna", "max_epochs": 1, "batch_size": args.batch_size,
            "lr": 0.001, "warmup_steps": 100, "window": [3000, 13500], "num_workers": args.workers,
        }  # fmt: skip
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]);"
            "from workflow.common.target import RunTarget;"
            "from workflow.sequence.train import train_experiment;"
            "train_experiment(json.loads(sys.argv[2]), sys.argv[3],"
            " RunTarget(sys.argv[3] + '/run'),"
            " trainer_overrides={'limit_train_batches': int(sys.argv[4]), 'limit_val_batches': 2})"
        )
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code, str(ROOT), json.dumps(settings), tmp, str(args.steps)],
            check=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    # the trainer and its DataLoader workers are children; ru_maxrss is the largest of them
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    as_float_gb = args.genes * LENGTH * 4 * 4 / 1024**3
    print(f"{args.model}: {args.steps} steps of {args.batch_size} genes in {seconds:.0f} s")
    print(f"peak RSS of one training process: {peak_gb:.2f} GB (target < 4 GB)")
    print(f"the {args.genes} training promoters as float32: {as_float_gb:.1f} GB")
    print(f"ratio float32 set / peak RSS: {as_float_gb / peak_gb:.1f}x")


if __name__ == "__main__":
    main()
