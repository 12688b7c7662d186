#!/usr/bin/env python
"""Sequence encode: the encode stage's pyfaidx reads against Biopython's ways of reading a
genome, for speed and for peak memory.

Writes a demo dataset (``--genes`` genes with a 10-kb flank: about 20 kb of genome per gene)
in a temporary folder, then, in this one process and on the same genes, reads each gene's
strand-aware promoter window (2 x flank base codes, reverse complemented on the - strand) with
  pyfaidx:     the encode stage's ``PromoterReader.window`` (an indexed seek and read), after
               the one-time .fai build (timed on its own);
  parse-once:  ``SeqIO.to_dict(SeqIO.parse(...))``: the whole genome parsed once into memory,
               then sliced per gene (parse time included: the fair comparison for speed);
  SeqIO.index: Biopython's lazy index, which re-reads the gene's whole chromosome record at
               each lookup;
  re-parse:    ``SeqIO.parse`` of the FASTA up to the gene's chromosome for every gene (no
               index at all: the slowest reader, printed for context only),
checks that all four return the same bases, and prints genes/s and pyfaidx's ratio to each
(best of ``--repeats`` runs; the two slow per-gene readers on ``--bio-genes`` random genes).

Peak memory is measured in a second pass under ``tracemalloc`` (Python and numpy allocations;
the timings come from the first pass, without it). Parse-once holds the genome as one byte
per base, so its peak grows with the genome (hg38: ~3.1 GB) where pyfaidx's stays at one
window: the real gain of the indexed reads is memory, not speed against a parse held in memory.

    python tests/benchmarks/encode_benchmark.py --genes 2000 --bio-genes 20
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
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

HG38_BASES = 3.1e9


def window_of(sequence, length: int, gene: Gene, flank: int) -> np.ndarray:
    """The gene's window (as ``PromoterReader.window``) sliced from a Biopython sequence."""
    p = gene.position - 1
    lo = p - flank if gene.strand == "+" else p - flank + 1
    a, b = max(lo, 0), min(lo + 2 * flank, length)
    codes = np.full(2 * flank, 4, dtype=np.uint8)
    raw = str(sequence[a:b]).upper().encode()
    codes[a - lo : b - lo] = BASE_CODES[np.frombuffer(raw, dtype=np.uint8)]
    return COMPLEMENT_CODES[codes[::-1]] if gene.strand == "-" else codes


Reader = Callable[[Path, Sequence[Gene], int], Iterator[np.ndarray]]


def reparse_windows(genome: Path, genes: Sequence[Gene], flank: int) -> Iterator[np.ndarray]:
    """Each gene's window from a fresh parse of the FASTA up to its chromosome (no index)."""
    for gene in genes:
        record = next(r for r in SeqIO.parse(genome, "fasta") if r.id == gene.chrom)
        yield window_of(record.seq, len(record), gene, flank)


def parse_once_windows(genome: Path, genes: Sequence[Gene], flank: int) -> Iterator[np.ndarray]:
    """Parse the genome once into memory, then slice every gene's window from it."""
    records = SeqIO.to_dict(SeqIO.parse(genome, "fasta"))
    for gene in genes:
        yield window_of(records[gene.chrom].seq, len(records[gene.chrom]), gene, flank)


def seqio_index_windows(genome: Path, genes: Sequence[Gene], flank: int) -> Iterator[np.ndarray]:
    """Biopython's lazy index: each lookup reads and parses the gene's chromosome record."""
    index = SeqIO.index(str(genome), "fasta")
    try:
        for gene in genes:
            record = index[gene.chrom]
            yield window_of(record.seq, len(record), gene, flank)
    finally:
        index.close()


def pyfaidx_windows(genome: Path, genes: Sequence[Gene], flank: int) -> Iterator[np.ndarray]:
    """The encode stage's reader (the .fai exists already: built once per genome)."""
    with ExitStack() as stack:
        reader = PromoterReader(open_genome(genome, stack), genome, flank)
        for gene in genes:
            yield reader.window(gene)[0]


def peak_mib(windows: Iterator[np.ndarray]) -> float:
    """Peak traced allocation, in MiB, of reading ``windows`` one at a time (none kept): the
    reader's own memory, as the encode stage uses it (one window at a time)."""
    tracemalloc.start()
    try:
        for _ in windows:
            pass
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


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
    parser.add_argument(
        "--bio-genes", type=int, default=20, help="random genes for the two slow per-gene readers"
    )
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
        bases = sum(manifest["chromosomes"].values())
        print(
            f"demo: {args.genes} genes, {bases / 1e6:.1f} Mb genome "
            f"({genome.stat().st_size / 2**20:.1f} MiB FASTA) written in "
            f"{time.perf_counter() - started:.2f} s"
        )
        genes = read_tss(root / DEMO_FILES["tss"])
        subset = [
            genes[i]
            for i in np.random.default_rng(args.seed).choice(len(genes), args.bio_genes, False)
        ]
        with ExitStack() as stack:
            started = time.perf_counter()
            open_genome(genome, stack)
            print(f".fai index built in {time.perf_counter() - started:.3f} s (once per genome)")
        readers: dict[str, tuple[list[Gene], Reader]] = {  # name -> (its genes, reader)
            "pyfaidx": (genes, pyfaidx_windows),
            "parse-once": (genes, parse_once_windows),
            "SeqIO.index": (subset, seqio_index_windows),
            "re-parse": (subset, reparse_windows),
        }
        rates, peaks, windows = {}, {}, {}
        for name, (which, reader) in readers.items():
            seconds, result = best_of(
                args.repeats, lambda r=reader, w=which: list(r(genome, w, args.flank))
            )
            rates[name] = len(which) / seconds
            windows[name] = dict(zip((g.gene_id for g in which), result, strict=True))
            peaks[name] = peak_mib(reader(genome, which, args.flank))
        reference = windows["pyfaidx"]
        same = all(
            np.array_equal(reference[gene_id], window)
            for found in windows.values()
            for gene_id, window in found.items()
        )
        print(f"same bases from all four readers: {same}")
        print(f"{'reader':12} {'genes':>6} {'genes/s':>10} {'pyfaidx x':>10} {'peak MiB':>9}")
        for name, (which, _) in readers.items():
            print(
                f"{name:12} {len(which):6d} {rates[name]:10.1f} "
                f"{rates['pyfaidx'] / rates[name]:10.2f} {peaks[name]:9.1f}"
            )
        per_base = (peaks["parse-once"] - peaks["pyfaidx"]) * 2**20 / bases
        print(
            f"memory: parse-once holds {per_base:.2f} bytes per genome base more than pyfaidx: "
            f"~{per_base * HG38_BASES / 2**30:.1f} GiB for hg38's {HG38_BASES / 1e9:.1f} Gb; "
            f"pyfaidx's peak is {peaks['pyfaidx']:.1f} MiB (one window at a time, the .fai's rows)"
        )
        out = Path(tmp) / "encoded"
        held_out = min(200, len(genes) // 10)
        started = time.perf_counter()
        counts = encode_dataset(
            genome, root / DEMO_FILES["tss"], root / DEMO_FILES["expression"],
            root / DEMO_FILES["halflife"], root / DEMO_FILES["proteins"],
            root / DEMO_FILES["abundance"], out, out / "skipped.tsv",
            {"flank": args.flank, "max_protein_length": 1000, "val_genes": held_out,
             "test_genes": held_out, "split_seed": 0}, "skip",
        )  # fmt: skip
        seconds = time.perf_counter() - started
        print(
            f"encode_dataset: {sum(counts.values())} genes in {seconds:.2f} s "
            f"({sum(counts.values()) / seconds:.0f} genes/s, two window reads per gene, "
            "one-hot and HDF5 writes included)"
        )


if __name__ == "__main__":
    main()
