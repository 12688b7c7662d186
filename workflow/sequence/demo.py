"""Seeded synthetic expression-from-sequence data in real formats, with a known best r^2.

Writes a genome FASTA (N runs at both chromosome ends, soft-masked lowercase runs), a TSS
table, an expression TSV, the eight mRNA half-life features, a protein FASTA and a
protein-abundance TSV (the files of ``layout.DEMO_FILES``).

log10 expression is a known function of two planted motifs on the gene's strand (a proximal
one within ``proximal`` bp of the TSS, a distal one at least ``distal_min`` bp away, both
inside ``signal_window``) and of the half-life features, plus Gaussian noise. By default the
proximal motif is a decoy (weight 0) and only the distal one counts, wherever it sits 500-1200
bp from the TSS: a model must find it and count it, not weigh fixed positions. log10 protein
abundance is a known function of that mRNA level and of the protein's K+R minus D+E fraction,
plus noise. Each task's best reachable r^2 (the squared Pearson correlation between the best
predictor the task can see and its observed label) is recorded as ``ceiling`` in
``manifest.json``; ``truth.tsv`` holds the per-gene signals it is computed from. The genome
and its planted motifs are drawn by workflow/sequence/demo_genome.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqRecord import SeqRecord
from tqdm import tqdm

from workflow.common.atomic import atomic_path, write_json, write_text
from workflow.common.config import schema_dataclass
from workflow.common.errors import InputError
from workflow.sequence.demo_genome import (
    _non_overlapping,
    background,
    count_occurrences,
    layout_genes,
    oriented,
    plant,
    random_motifs,
)
from workflow.sequence.layout import DEMO_FILES, HALF_LIFE_FEATURES, LENGTH_FEATURES

STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
#: Background amino-acid frequencies of the human proteome (STANDARD_AA order).
AA_FREQUENCIES = np.array(
    [0.070, 0.023, 0.047, 0.071, 0.037, 0.066, 0.026, 0.043, 0.057, 0.099,
     0.021, 0.036, 0.063, 0.048, 0.056, 0.083, 0.054, 0.060, 0.012, 0.027]
)  # fmt: skip
AA_CONCENTRATION = 60.0  # Dirichlet concentration: how far a protein strays from background
#: Effect of each z-scored half-life feature on log10 expression (HALF_LIFE_FEATURES order).
HALF_LIFE_WEIGHTS = (0.10, -0.12, -0.15, 0.08, 0.05, 0.10, -0.08, 0.12)
MRNA_OFFSET, PROTEIN_OFFSET = 1.5, 3.0  # log10 levels of an average gene and protein
EDGE_MARGIN = 50  # bp between an edge gene's signal region and its chromosome's N run
LINE_WIDTH = 60


def _edge_distance(self) -> int:
    """Distance of an edge gene's TSS from its chromosome end: its signal region stays
    clear of the N run, its flank window does not."""
    lo, hi = self.signal_window
    return self.n_run + max(-lo, hi) + EDGE_MARGIN


def _check(self) -> None:
    """Settings under which the planted signal would not fit stop before any write."""
    lo, hi = self.signal_window
    m = self.motif_length
    problems = []
    if not -self.flank <= lo < 0 < hi <= self.flank:
        problems.append(
            f"signal_window {list(self.signal_window)} must hold the TSS and fit in the "
            f"flank (+-{self.flank})"
        )
    if not m * self.max_motifs <= self.proximal <= min(-lo, hi):
        problems.append(
            f"proximal {self.proximal} must hold {self.max_motifs} motifs of {m} bp "
            "and lie inside signal_window"
        )
    if self.distal_min <= self.proximal:
        problems.append(f"distal_min {self.distal_min} must exceed proximal {self.proximal}")
    if max(-lo - self.distal_min, hi - self.distal_min) < 2 * m * self.max_motifs:
        problems.append(f"signal_window {list(self.signal_window)} leaves no distal room")
    if self.edge_genes > 2 * self.chromosomes or self.genes < 2 * self.chromosomes:
        problems.append("needs genes >= 2 x chromosomes >= edge_genes")
    if self.edge_genes and self.edge_distance() + self.n_run > self.flank:
        problems.append(f"flank {self.flank} too short for edge genes (n_run, signal_window)")
    if not 0 < self.protein_length[0] <= self.protein_length[1]:
        problems.append(f"protein_length {list(self.protein_length)} is no range")
    if problems:
        raise InputError("sequence_demo settings", "; ".join(problems))


#: write_demo's settings: config/schema/sequence.yaml $defs/sequence_demo, their one source.
DemoSettings = schema_dataclass(
    "DemoSettings", "sequence_demo", __name__, edge_distance=_edge_distance, check=_check
)


def half_life_table(rng: np.random.Generator, n: int) -> np.ndarray:
    """Raw half-life features (HALF_LIFE_FEATURES order): lengths in bp, GC fractions and
    ORF exon density, in plausible human ranges."""
    utr5 = np.maximum(1, np.round(rng.lognormal(math.log(150), 0.8, n)))
    cds = np.maximum(150, 3 * np.round(rng.lognormal(math.log(1200), 0.7, n) / 3))
    intron = np.round(rng.lognormal(math.log(15000), 1.2, n))
    utr3 = np.maximum(1, np.round(rng.lognormal(math.log(800), 0.9, n)))
    gc5 = np.clip(rng.normal(0.60, 0.08, n), 0.2, 0.9).round(4)
    gc_cds = np.clip(rng.normal(0.52, 0.06, n), 0.2, 0.9).round(4)
    gc3 = np.clip(rng.normal(0.43, 0.05, n), 0.2, 0.9).round(4)
    density = rng.lognormal(math.log(0.6), 0.4, n).round(4)
    return np.column_stack([utr5, cds, intron, utr3, gc5, gc_cds, gc3, density])


def half_life_signal(raw: np.ndarray, weight: float) -> np.ndarray:
    """The linear half-life term: log10(x + 0.1) for lengths, z-scored over all genes."""
    x = raw.astype(float).copy()
    lengths = [HALF_LIFE_FEATURES.index(f) for f in LENGTH_FEATURES]
    x[:, lengths] = np.log10(x[:, lengths] + 0.1)
    z = (x - x.mean(0)) / x.std(0)
    return weight * z @ np.array(HALF_LIFE_WEIGHTS)


def composition(protein: str) -> float:
    """K+R minus D+E fraction: the composition the protein level depends on."""
    body = protein.rstrip("*")
    charge = sum(body.count(a) for a in "KR") - sum(body.count(a) for a in "DE")
    return charge / len(body)


def r2(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _observed(rng: np.random.Generator, signal: np.ndarray, sd: float, floor: float) -> np.ndarray:
    """signal + Gaussian noise, redrawn where it would fall to ``floor`` or below."""
    obs = signal + rng.normal(0, sd, len(signal))
    while (low := obs <= floor).any():
        obs[low] = signal[low] + rng.normal(0, sd, int(low.sum()))
    return obs


def write_genome(path: Path, chroms: dict[str, np.ndarray]) -> None:
    """FASTA with ``LINE_WIDTH`` bases per line (the fixed width pyfaidx needs)."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        for name, seq in chroms.items():
            fh.write(f">{name}\n".encode())
            full = len(seq) // LINE_WIDTH * LINE_WIDTH
            rows = seq[:full].reshape(-1, LINE_WIDTH)
            newline = np.full((len(rows), 1), ord("\n"), dtype=np.uint8)
            fh.write(np.hstack([rows, newline]).tobytes())
            if full < len(seq):
                fh.write(seq[full:].tobytes() + b"\n")


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    write_text(path, "\n".join("\t".join(r) for r in [header, *rows]) + "\n")


def write_demo(root: str | Path, settings: DemoSettings) -> dict[str, Any]:
    """Write the whole demo dataset; the manifest is written last and marks completion."""
    s, root = settings, Path(root)
    s.check()
    m = s.motif_length
    lengths, genes = layout_genes(s, np.random.default_rng([s.seed, 0]))
    rng_seq = np.random.default_rng([s.seed, 1])
    chroms = {name: background(s, length, rng_seq) for name, length in lengths.items()}

    rng_motif = np.random.default_rng([s.seed, 2])
    motifs = random_motifs(rng_motif, m)
    lo, hi = s.signal_window
    regions = [
        [(-s.proximal, s.proximal - m)],
        [r for r in ((lo, -s.distal_min - m), (s.distal_min, hi - m)) if r[1] >= r[0]],
    ]
    for gene in tqdm(genes, desc="plant motifs", mininterval=5):
        taken: list[int] = []
        for motif, ranges in zip(motifs, regions, strict=True):
            k = int(rng_motif.integers(0, s.max_motifs + 1))
            starts = _non_overlapping(rng_motif, ranges, k, taken, m)
            plant(chroms[gene.chrom], gene, motif, starts, m)
            taken += starts
    counts = np.array(
        [
            [count_occurrences(oriented(chroms[g.chrom], g, lo, hi), motif) for motif in motifs]
            for g in genes
        ]
    )
    write_genome(root / DEMO_FILES["genome"], chroms)

    rng_mrna = np.random.default_rng([s.seed, 3])
    raw_hl = half_life_table(rng_mrna, len(genes))
    mrna_true = MRNA_OFFSET + counts @ np.array(s.motif_weights)
    mrna_true = mrna_true + half_life_signal(raw_hl, s.halflife_weight)
    observed = _observed(rng_mrna, mrna_true, s.mrna_noise, math.log10(0.1) + 1e-3)
    expression = [_fmt(10**v - 0.1) for v in observed]
    expr_log = np.log10(np.array(expression, dtype=float) + 0.1)

    rng_prot = np.random.default_rng([s.seed, 4])
    has_protein = rng_prot.random(len(genes)) < s.protein_fraction
    proteins: dict[int, str] = {}
    for i in np.flatnonzero(has_protein):
        length = int(rng_prot.integers(s.protein_length[0], s.protein_length[1] + 1))
        freqs = rng_prot.dirichlet(AA_FREQUENCIES / AA_FREQUENCIES.sum() * AA_CONCENTRATION)
        body = "M" + "".join(STANDARD_AA[k] for k in rng_prot.choice(20, length - 1, p=freqs))
        proteins[int(i)] = body + ("*" if rng_prot.random() < 0.5 else "")
    with_protein = np.array(sorted(proteins))
    comp = np.array([composition(proteins[i]) for i in with_protein])
    comp = (comp - comp.mean()) / comp.std()
    seq_signal = np.full(len(genes), np.nan)
    seq_signal[with_protein] = s.protein_composition_weight * comp
    joint_signal = np.full(len(genes), np.nan)
    joint_signal[with_protein] = s.protein_mrna_weight * mrna_true[with_protein]
    joint_signal[with_protein] += seq_signal[with_protein]
    abundance_log = PROTEIN_OFFSET + joint_signal[with_protein]
    abundance_log += rng_prot.normal(0, s.protein_noise, len(with_protein))
    abundance = [_fmt(10**v) for v in abundance_log]
    abundance_log = np.log10(np.array(abundance, dtype=float))

    write_tsv(
        root / DEMO_FILES["tss"],
        ["gene_id", "chrom", "position", "strand"],
        [[g.gene_id, g.chrom, str(g.tss0 + 1), g.strand] for g in genes],
    )
    write_tsv(
        root / DEMO_FILES["expression"],
        ["gene_id", "expression"],
        [[g.gene_id, e] for g, e in zip(genes, expression, strict=True)],
    )
    write_tsv(
        root / DEMO_FILES["halflife"],
        ["gene_id", *HALF_LIFE_FEATURES],
        [
            [g.gene_id, *(str(int(v)) for v in row[:4]), *(f"{v:.4f}" for v in row[4:])]
            for g, row in zip(genes, raw_hl, strict=True)
        ],
    )
    records = [
        SeqRecord(Seq(proteins[i]), id=genes[i].gene_id, description="") for i in with_protein
    ]
    with atomic_path(root / DEMO_FILES["proteins"]) as tmp:
        SeqIO.write(records, tmp, "fasta")
    write_tsv(
        root / DEMO_FILES["abundance"],
        ["gene_id", "abundance"],
        [[genes[i].gene_id, a] for i, a in zip(with_protein, abundance, strict=True)],
    )
    write_tsv(
        root / "truth.tsv",
        ["gene_id", "mrna_true", "protein_seq_signal", "protein_joint_signal", "proximal",
         "distal"],
        [
            [g.gene_id, _fmt(mrna_true[i]), _fmt(seq_signal[i]), _fmt(joint_signal[i]),
             str(counts[i, 0]), str(counts[i, 1])]
            for i, g in enumerate(genes)
        ],
    )  # fmt: skip

    ceiling = {
        "mrna": r2(mrna_true, expr_log),
        "protein": r2(seq_signal[with_protein], abundance_log),
        "joint": r2(joint_signal[with_protein], abundance_log),
    }
    manifest = {
        "dataset": "synthetic expression-from-sequence demo",
        "seed": s.seed,
        "genes": len(genes),
        "proteins": len(with_protein),
        "chromosomes": lengths,
        "files": dict(DEMO_FILES),
        "motifs": [
            {"name": name, "sequence": motif.decode(), "weight": w, "starts": ranges}
            for name, motif, w, ranges in zip(
                ("proximal", "distal"), motifs, s.motif_weights, regions, strict=True
            )
        ],
        "mrna_offset": MRNA_OFFSET,
        "halflife_weights": dict(zip(HALF_LIFE_FEATURES, HALF_LIFE_WEIGHTS, strict=True)),
        "padded_genes": [g.gene_id for g in genes if g.padded],
        "settings": asdict(s),
        "ceiling": {k: round(v, 4) for k, v in ceiling.items()},
    }
    write_json(root / "manifest.json", manifest)
    return manifest
