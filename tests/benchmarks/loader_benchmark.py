#!/usr/bin/env python
"""Zhu & Fang's training loader: samples/s from the HDF5 store vs decoding the JPEGs.

Writes a demo sequence set at MOTSynth's 1920x1080 in a temporary folder, indexes it, extracts
its train split to the stored frame size, then iterates both loaders (same items, batch size
and workers) in this one process and prints each one's samples/s and their ratio.

    python tests/benchmarks/loader_benchmark.py --frame-size 720 1280
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from torch.utils.data import DataLoader, Dataset  # noqa: E402

from tests.conftest import INDEX_SETTINGS  # noqa: E402
from workflow.distance.demo import DemoSettings, write_demo  # noqa: E402
from workflow.distance.index import build_index  # noqa: E402
from workflow.distance.store import (  # noqa: E402
    FrameDataset,
    JpegFrameDataset,
    collate_frames,
    extract_split,
)


def samples_per_second(dataset: Dataset, batch_size: int, workers: int, epochs: int) -> float:
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_frames
    )
    for _ in loader:  # warm-up: worker start, file handles, page cache
        break
    started, items = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            items += len(batch["image"])
    return items / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequences", type=int, default=6, help="60%% go to the train split")
    parser.add_argument("--frames", type=int, default=12, help="frames per sequence")
    parser.add_argument("--frame-size", type=int, nargs=2, default=[720, 1280], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, prep = Path(tmp) / "motsynth", Path(tmp) / "prep"
        write_demo(
            root,
            DemoSettings(
                sequences=args.sequences,
                frames_per_sequence=args.frames,
                width=1920,
                height=1080,
                seed=1,
            ),
        )
        tables = {s: prep / f"{s}.parquet" for s in ("train", "val", "test")}
        build_index(root, tables, prep / "skipped.tsv", INDEX_SETTINGS, "fail")
        store = prep / "train.h5"
        extract_split(
            tables["train"], root, store, prep / "x.tsv", args.frame_size, (64, 32), "fail"
        )
        run = (args.batch_size, args.workers, args.epochs)
        hdf5 = samples_per_second(FrameDataset(store), *run)
        jpeg = samples_per_second(JpegFrameDataset(store, root), *run)
    size = "x".join(map(str, args.frame_size))
    print(f"frames: 1920x1080 JPEG -> {size}, batch {args.batch_size}, workers {args.workers}")
    print(f"HDF5 store:  {hdf5:8.1f} samples/s")
    print(f"JPEG decode: {jpeg:8.1f} samples/s")
    print(f"ratio: {hdf5 / jpeg:.2f}x")


if __name__ == "__main__":
    main()
