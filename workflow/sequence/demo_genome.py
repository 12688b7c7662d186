"""The demo's synthetic genome: gene placement, background bases and the planted motifs.

Holds the drawing of the DNA itself (where genes sit, which bases surround them, where the two
motifs go and how often they occur on each gene's strand); workflow/sequence/demo.py turns the
motif counts into labels and writes the files. Each function draws from the generator it is
given in a fixed order, which keeps the demo byte-identical for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workflow.sequence.demo import DemoSettings

COMPLEMENT = bytes.maketrans(b"ACGTNacgtn", b"TGCANtgcan")


@dataclass
class Gene:
    gene_id: str
    chrom: str
    tss0: int  # 0-based genome coordinate of the TSS base
    strand: str
    padded: bool = False


def reverse_complement(seq: bytes) -> bytes:
    return seq.translate(COMPLEMENT)[::-1]


def gene_region(gene: Gene, lo: int, hi: int) -> tuple[int, int]:
    """Genome slice [a, b) holding positions lo..hi-1 relative to the TSS in the gene's
    orientation (on - strand genes read reverse complemented)."""
    if gene.strand == "+":
        return gene.tss0 + lo, gene.tss0 + hi
    return gene.tss0 - hi + 1, gene.tss0 - lo + 1


def oriented(chrom: np.ndarray, gene: Gene, lo: int, hi: int) -> bytes:
    """Upper-case bases lo..hi-1 relative to the TSS, as the gene's strand reads them."""
    a, b = gene_region(gene, lo, hi)
    seq = chrom[a:b].tobytes().upper()
    return seq if gene.strand == "+" else reverse_complement(seq)


def count_occurrences(seq: bytes, motif: bytes) -> int:
    """Occurrences of ``motif`` in ``seq``, overlapping ones included."""
    count, start = 0, seq.find(motif)
    while start >= 0:
        count += 1
        start = seq.find(motif, start + 1)
    return count


def random_motifs(rng: np.random.Generator, length: int) -> list[bytes]:
    """Two distinct motifs that are not their own or each other's reverse complement and do
    not overlap themselves, so that counts on the gene's strand are unambiguous."""
    motifs: list[bytes] = []
    while len(motifs) < 2:
        motif = bytes(b"ACGT"[i] for i in rng.integers(0, 4, length))
        rc = reverse_complement(motif)
        self_overlap = any(motif[k:] == motif[: length - k] for k in range(1, length))
        clash = any(motif in (other, reverse_complement(other)) for other in motifs)
        if motif != rc and not self_overlap and not clash and len(set(motif)) >= 3:
            motifs.append(motif)
    return motifs


def layout_genes(s: DemoSettings, rng: np.random.Generator) -> tuple[dict[str, int], list[Gene]]:
    """Chromosome lengths and gene positions: one 2 x flank + 1 slot per gene (random gaps
    between slots), so no two flank windows overlap on either strand; edge genes sit
    ``edge_distance`` from a chromosome end, so their windows run past it."""
    lengths: dict[str, int] = {}
    genes: list[Gene] = []
    per_chrom = np.array_split(np.arange(s.genes), s.chromosomes)
    edge = {}
    for e in range(s.edge_genes):
        members = per_chrom[(e // 2) % s.chromosomes]
        edge[int(members[0] if e % 2 == 0 else members[-1])] = "start" if e % 2 == 0 else "end"
    d = s.edge_distance()
    for c, members in enumerate(per_chrom):
        name = f"chr{c + 1}"
        pos, placed = s.n_run, []
        for g in members:
            start = pos + int(rng.integers(0, max(1, s.flank // 5)))
            strand = "+" if rng.random() < 0.5 else "-"
            placed.append(Gene(f"gene{g + 1:05d}", name, start + s.flank, strand))
            pos = start + 2 * s.flank + 1  # a - strand window reaches TSS + flank
        length = pos + s.n_run
        for g, gene in zip(members, placed, strict=True):
            where = edge.get(int(g))
            if where:
                gene.tss0 = d if where == "start" else length - d
                gene.padded = True
        lengths[name] = length
        genes += placed
    return lengths, genes


def background(s: DemoSettings, length: int, rng: np.random.Generator) -> np.ndarray:
    """Random bases at the set GC content as ASCII codes, N runs at both ends and
    lowercase (soft-masked) runs about every 2 kb."""
    p = rng.random(length)
    gc = s.gc / 2
    codes = np.select(
        [p < gc, p < 2 * gc, p < 2 * gc + (1 - s.gc) / 2], [ord("G"), ord("C"), ord("A")], ord("T")
    ).astype(np.uint8)
    codes[: s.n_run] = ord("N")
    codes[length - s.n_run :] = ord("N")
    for start in rng.integers(0, length, length // 2000):
        codes[start : start + int(rng.integers(50, 300))] |= 0x20
    return codes


def _non_overlapping(
    rng: np.random.Generator, ranges: list[tuple[int, int]], k: int, taken: list[int], m: int
) -> list[int]:
    """``k`` motif starts from the inclusive ``ranges``, clear of each other and ``taken``."""
    sizes = np.array([b - a + 1 for a, b in ranges], dtype=float)
    starts: list[int] = []
    while len(starts) < k:
        a, b = ranges[int(rng.choice(len(ranges), p=sizes / sizes.sum()))]
        r = int(rng.integers(a, b + 1))
        if all(abs(r - t) >= m for t in taken + starts):
            starts.append(r)
    return starts


def plant(chrom: np.ndarray, gene: Gene, motif: bytes, starts: list[int], m: int) -> None:
    """Write ``motif`` at each start (relative to the TSS, gene orientation) on the gene's
    strand: reverse complemented into the genome for a - strand gene."""
    site = motif if gene.strand == "+" else reverse_complement(motif)
    for r in starts:
        a, _ = gene_region(gene, r, r + m)
        chrom[a : a + m] = np.frombuffer(site, dtype=np.uint8)
