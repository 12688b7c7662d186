#!/usr/bin/env python
"""Sequence encode: pyfaidx random access per gene vs a Biopython parse of the genome per gene.

Writes a demo dataset (``--genes`` genes with a 10-kb flank: about 20 kb of genome per gene)
in a temporary folder, then, in this one process and on the same genes, times
  pyfaidx:   the encode stage's strand-aware window read (``PromoterReader.window``: an indexed
             seek and read of 2 x flank bases, base codes, reverse complement on the - strand),
             after the one-time .fai build (timed on its own);
  biopython: ``SeqIO.parse`` of the genome FASTA up to the gene's chromosome, then the same
             slice and reverse complement (a per-gene reader without an index), on
             ``--bio-genes`` genes drawn at random;
and prints each one's genes/s and their ratio (best of ``--repeats`` runs each), after checking
that both return the same bases. It also times ``write_demo`` and the whole
``encode_dataset`` (windows, one-hot, HDF5 writes) for context.

    python tests/benchmarks/encode_benchmark.py --genes 2000 --bio-genes 50
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from Bio import SeqIO

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflow.sequence.demo import DemoSettings, write_demo  # noqa: E402
from workflow.sequence.encode import encode_dataset  # noqa: E402
from workflow.sequence.layout import DEMO_FILES  # noqa: E402
from workflow.sequence.promoters import (  # noqa: E402
    BASE_CODES,
    COMPLEMENT_CODES,
    PromoterReader,
    open_genome,
)
from workflow.sequence.tables import Gene, read_tss  # noqa: E402


def biopython_window(genome: Path, gene: Gene, flank: int) -> np.ndarray:
    """The gene's window from a fresh parse of the FASTA (no index), as base codes."""
    for record in SeqIO.parse(genome, "fasta"):
        if record.id != gene.chrom:
            continue
        p = gene.position - 1
        lo = p - flank if gene.strand == "+" else p - flank + 1
        a, b = max(lo, 0), min(lo + 2 * flank, len(record))
        codes = np.full(2 * flank, 4, dtype=np.uint8)
        raw = str(record.seq[a:b]).upper().encode()
        codes[a - lo : b - lo] = BASE_CODES[np.frombuffer(raw, dtype=np.uint8)]
        return COMPLEMENT_CODES[codes[::-1]] if gene.strand == "-" else codes
    raise KeyError(gene.chrom)


def best_of(repeats: int, work) -> tuple[float, list[np.ndarray]]:
    best: tuple[float, list[np.ndarray]] | None = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, result)
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--genes", type=int, default=2000, help="demo genes to generate")
    parser.add_argument("--flank", type=int, default=10000, help="bp each side of the TSS")
    parser.add_argument("--bio-genes", type=int, default=50, help="genes for the Biopython side")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        started = time.perf_counter()
        manifest = write_demo(
            root, DemoSettings(genes=args.genes, flank=args.flank, seed=args.seed)
        )
        genome = root / DEMO_FILES["genome"]
        print(
            f"demo: {args.genes} genes, {sum(manifest['chromosomes'].values()) / 1e6:.1f} Mb "
            f"genome written in {time.perf_counter() - started:.2f} s"
        )
        genes = read_tss(root / DEMO_FILES["tss"])
        subset = [
            genes[i]
            for i in np.random.default_rng(args.seed).choice(len(genes), args.bio_genes, False)
        ]
        with ExitStack() as stack:
            started = time.perf_counter()
            reader = PromoterReader(open_genome(genome, stack), genome, args.flank)
            print(f".fai index built in {time.perf_counter() - started:.3f} s (once per genome)")
            fai_all, _ = best_of(args.repeats, lambda: [reader.window(g)[0] for g in genes])
            fai_sub, fai_windows = best_of(
                args.repeats, lambda: [reader.window(g)[0] for g in subset]
            )
        bio, bio_windows = best_of(
            args.repeats, lambda: [biopython_window(genome, g, args.flank) for g in subset]
        )
        same = all(np.array_equal(a, b) for a, b in zip(fai_windows, bio_windows, strict=True))
        print(
            f"pyfaidx:   {len(genes) / fai_all:10.1f} genes/s on all {len(genes)} genes "
            f"({len(subset) / fai_sub:.1f} genes/s on the {len(subset)}-gene subset)"
        )
        print(f"biopython: {len(subset) / bio:10.1f} genes/s on {len(subset)} random genes")
        print(
            f"ratio: pyfaidx is {(len(genes) / fai_all) / (len(subset) / bio):.0f}x faster "
            f"per gene; same bases on the subset: {same}"
        )
        out = Path(tmp) / "encoded"
        started = time.perf_counter()
        counts = encode_dataset(
            genome, root / DEMO_FILES["tss"], root / DEMO_FILES["expression"],
            root / DEMO_FILES["halflife"], root / DEMO_FILES["proteins"],
            root / DEMO_FILES["abundance"], out, out / "skipped.tsv",
            {"flank": args.flank, "max_protein_length": 1000, "val_genes": 200,
             "test_genes": 200, "split_seed": 0}, "skip",
        )  # fmt: skip
        seconds = time.perf_counter() - started
        print(
            f"encode_dataset: {sum(counts.values())} genes in {seconds:.2f} s "
            f"({sum(counts.values()) / seconds:.0f} genes/s, two window reads per gene, "
            "one-hot and HDF5 writes included)"
        )


if __name__ == "__main__":
    main()
