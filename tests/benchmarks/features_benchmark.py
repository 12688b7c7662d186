#!/usr/bin/env python
"""WSI feature extraction: tiles/s with 1 slide reader (in-process) vs N reader workers.

Writes demo slides in a temporary folder, tiles them, then encodes every tile of every scale
with the same encoder twice in this one process: DataLoader with ``num_workers=0`` (reads
and encodes in turn) and with ``--workers N`` processes reading with OpenSlide while the
encoder runs. Prints each one's tiles/s and their ratio. With a GPU (``--device cuda``) the
readers are what keep the encoder fed; on a 2-core CPU they compete with it for cores.

    python tests/benchmarks/features_benchmark.py --slides 4 --workers 4 --device cuda
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflow.wsi.demo import DemoSettings, write_demo  # noqa: E402
from workflow.wsi.features import build_encoder, encode_slide  # noqa: E402
from workflow.wsi.tiling import tile_file  # noqa: E402


def tiles_per_second(tilings: list[Path], out: Path, encoder, workers: int, args) -> float:
    started, tiles = time.perf_counter(), 0
    for path in tilings:
        counts = encode_slide(path, out / path.name, encoder, args.batch_size, workers, args.device)
        tiles += sum(counts.values())
    return tiles / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="N reader workers (default 2)")
    parser.add_argument("--encoder", default="mobilenetv3_small_050", help="timm model name")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_demo(root / "demo", DemoSettings(slides=args.slides, seed=5))
        tilings = []
        for slide in sorted((root / "demo/slides").glob("*.tif")):
            tile_file(slide, root / "tiles" / f"{slide.stem}.h5")
            tilings.append(root / "tiles" / f"{slide.stem}.h5")
        encoder = build_encoder({"encoder": args.encoder, "seed": 0})
        tiles_per_second(tilings[:1], root / "warm", encoder, 0, args)  # warm-up
        one = tiles_per_second(tilings, root / "one", encoder, 0, args)
        many = tiles_per_second(tilings, root / "many", encoder, args.workers, args)
    print(f"encoder {args.encoder} on {args.device}, {args.slides} slides")
    print(f"1 reader (in-process): {one:8.1f} tiles/s")
    print(f"{args.workers} reader workers:   {many:8.1f} tiles/s")
    print(f"ratio: {many / one:.2f}x")


if __name__ == "__main__":
    main()
