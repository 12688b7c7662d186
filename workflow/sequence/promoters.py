"""Promoters of ``sequence_encode``: windows around each TSS read from an indexed genome
(pyfaidx), or records of a per-gene promoter FASTA (Biopython's lazy index).

Promoter convention. For a TSS at 1-based ``position`` (0-based ``p = position - 1``) and
``flank`` F, row ``i`` (0 <= i < 2F) of a gene's stored promoter holds

- ``+`` strand: genome base ``p - F + i`` (the window [p - F, p + F) read as it is);
- ``-`` strand: the complement of genome base ``p + F - i`` (the window [p - F + 1, p + F + 1)
  reverse complemented),

so row F is the TSS base on both strands, upstream to its left and downstream to its right.
Rows beyond a chromosome end are N (all zero): such genes are counted and logged as N-padded.

Xpresso's layout (``xpresso_layout=True``) is what its scripts extract: a BED interval
[P - F, P + F) around the 1-based TSS P (``extract_promoters.pl``, the CAGE one-liner of
``runme.sh``) cut by ``bedtools getfasta -s``, so both strands read genome bases
[p - F + 1, p + F + 1) and the TSS sits at row F - 1 on the ``+`` strand, F on the ``-``
strand. A window that does not fit its chromosome is a ``BadSample`` there (the Perl drops a
start <= 0, bedtools an end past the chromosome), never N-padded.

A promoter FASTA holds these rows already: one record per gene id, exactly 2F bp on the gene's
strand with the TSS at 0-based index F, in the order of the genes (its file order). It is read
with Biopython's lazy index, one record at a time, so a genome-scale set never sits in memory;
nothing is padded.

A window with non-ACGTN characters, a TSS outside its chromosome or on an unknown one, or a
record of the wrong length is a ``BadSample``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyfaidx
from Bio import SeqIO, bgzf

from workflow.common.errors import BadSample, InputError
from workflow.sequence.layout import (
    DNA,
)
from workflow.sequence.tables import Gene

log = logging.getLogger("lsai.sequence.promoters")

#: ASCII -> 0-3 (A, C, G, T), 4 (N), 255 (anything else).
BASE_CODES = np.full(256, 255, dtype=np.uint8)
for _k, _b in enumerate(DNA + "N"):
    BASE_CODES[ord(_b)] = BASE_CODES[ord(_b.lower())] = _k
COMPLEMENT_CODES = np.array([3, 2, 1, 0, 4], dtype=np.uint8)
ONE_HOT = np.vstack([np.eye(4, dtype=bool), np.zeros((1, 4), dtype=bool)])


def _index_name(genome: Path, stack: ExitStack) -> Path | None:
    """Where pyfaidx keeps the .fai: beside the genome when it is there and fresh or the
    folder is writable, else in a temporary folder (a read-only reference genome)."""
    fai = Path(f"{genome}.fai")
    if fai.is_file() and fai.stat().st_mtime >= genome.stat().st_mtime:
        return None
    if os.access(genome.parent, os.W_OK):
        return None
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fai.")))
    log.info("%s: folder not writable, building the FASTA index in %s", genome, scratch)
    return scratch / fai.name


def open_genome(genome: Path, stack: ExitStack) -> pyfaidx.Fasta:
    """The genome for random access; a missing, truncated, corrupt or non-FASTA file is an
    InputError."""
    genome = Path(genome)
    if not genome.is_file():
        raise InputError(genome, "genome FASTA not found")
    size = genome.stat().st_size
    with genome.open("rb") as fh:
        head = fh.read(2)
        fh.seek(max(size - 1, 0))
        last = fh.read(1)
    if size == 0:
        raise InputError(genome, "empty genome FASTA")
    if head != b"\x1f\x8b" and last != b"\n":
        raise InputError(
            genome, "ends mid-line: truncated (a complete FASTA ends with a line break)"
        )
    try:
        fasta = pyfaidx.Fasta(
            str(genome),
            indexname=_index_name(genome, stack),
            as_raw=True,
            sequence_always_upper=True,
            read_long_names=False,
            rebuild=True,
        )
    except (pyfaidx.FastaIndexingError, ValueError, OSError) as err:
        raise InputError(genome, f"not a readable genome FASTA: {err}") from None
    stack.callback(fasta.close)
    for name, record in fasta.faidx.index.items():
        if record.rlen == 0:
            raise InputError(genome, f"sequence {name} is empty (truncated?)")
        if record.bend > size:
            raise InputError(
                genome, f"sequence {name} ends past the end of the file: truncated after indexing"
            )
    return fasta


def base_codes(raw: bytes, path: Path, where: Callable[[int], str]) -> np.ndarray:
    """ASCII bases -> codes (0-3 ACGT, 4 N, either case); the first character that is none
    of them is a BadSample of ``path`` that ``where(its index)`` describes."""
    codes = BASE_CODES[np.frombuffer(raw, dtype=np.uint8)]
    bad = np.flatnonzero(codes == 255)
    if bad.size:
        raise BadSample(path, where(int(bad[0])))
    return codes


class PromoterReader:
    """Strand-aware TSS +- flank windows of one genome as base codes (0-3 ACGT, 4 N), in
    this project's layout or (``xpresso_layout``) in Xpresso's."""

    def __init__(
        self, fasta: pyfaidx.Fasta, path: Path, flank: int, *, xpresso_layout: bool = False
    ) -> None:
        self.fasta, self.path, self.flank = fasta, Path(path), flank
        self.xpresso = xpresso_layout
        self.lengths = {name: len(record) for name, record in fasta.items()}

    def locate(self, gene: Gene, tss_path: Path) -> None:
        """An unknown chromosome or a TSS outside it is a BadSample of the TSS table."""
        length = self.lengths.get(gene.chrom)
        if length is None:
            raise BadSample(
                tss_path, f"line {gene.line}: gene {gene.gene_id}: unknown chromosome "
                f"{gene.chrom!r} (not in {self.path.name})",
            )  # fmt: skip
        if not 1 <= gene.position <= length:
            raise BadSample(
                tss_path,
                f"line {gene.line}: gene {gene.gene_id}: TSS {gene.chrom}:{gene.position} "
                f"outside the chromosome (1-{length})",
            )
        f, p = self.flank, gene.position
        if self.xpresso and not (p - f > 0 and p + f <= length):
            raise BadSample(
                tss_path,
                f"line {gene.line}: gene {gene.gene_id}: TSS {gene.chrom}:{p} +- {f} bp runs "
                f"past the chromosome (1-{length}); Xpresso's extraction drops such genes",
            )

    def window(self, gene: Gene) -> tuple[np.ndarray, bool]:
        """The gene's 2 x flank base codes in its orientation and whether they run past a
        chromosome end (N-padded); a non-ACGTN character is a BadSample naming it."""
        f, p, length = self.flank, gene.position - 1, self.lengths[gene.chrom]
        lo = p - f if gene.strand == "+" and not self.xpresso else p - f + 1
        a, b = max(lo, 0), min(lo + 2 * f, length)
        try:
            raw = self.fasta[gene.chrom][a:b].encode("ascii")
        except UnicodeError:
            raise BadSample(
                self.path, f"gene {gene.gene_id}: non-ASCII bytes in {gene.chrom}:{a + 1}-{b}"
            ) from None
        if len(raw) != b - a:
            raise InputError(self.path, f"{gene.chrom} is shorter than its index says: truncated")
        where = f"gene {gene.gene_id}: non-ACGTN character"
        part = base_codes(
            raw, self.path, lambda k: f"{where} {chr(raw[k])!r} at {gene.chrom}:{a + k + 1}"
        )
        codes = np.full(2 * f, 4, dtype=np.uint8)
        codes[a - lo : b - lo] = part
        if gene.strand == "-":
            codes = COMPLEMENT_CODES[codes[::-1]]
        return codes, a > lo or b < lo + 2 * f


def _duplicate_records(path: Path) -> str:
    """The first record id found twice and both record numbers, for SeqIO.index's bare
    'Duplicate key' (only read when that happened)."""
    seen: dict[bytes, int] = {}
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    with bgzf.open(path, "rb") if gzipped else path.open("rb") as fh:
        k = 0
        for line in fh:
            if line.startswith(b">"):
                k += 1
                name = (line[1:].split() or [b""])[0]
                if name in seen:
                    return f"{name.decode(errors='replace')} (records {seen[name]} and {k})"
                seen[name] = k
    return "?"


def open_promoter_index(path: Path, stack: ExitStack) -> Any:
    """Biopython's lazy index of a promoter FASTA (record offsets only, in file order); a
    missing, empty or non-FASTA file, a record without id or an id twice is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "promoter FASTA not found")
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head.strip():
        raise InputError(path, "empty promoter FASTA (no record)")
    if head[:2] != b"\x1f\x8b" and not head.lstrip().startswith(b">"):
        first = head.lstrip().split(b"\n", 1)[0][:60].decode(errors="replace")
        raise InputError(
            path, f"not a FASTA: it starts with {first!r}, not a record ('>' and the gene id)"
        )
    try:
        index = SeqIO.index(str(path), "fasta")
    except ValueError as err:
        if str(err).startswith("Duplicate key"):
            raise InputError(path, f"duplicate id {_duplicate_records(path)}") from None
        raise InputError(path, f"not a readable FASTA: {str(err).splitlines()[0]}") from None
    except IndexError:
        raise InputError(path, "a record has no id (a line '>' alone)") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"not a text FASTA: {err}") from None
    stack.callback(index.close)
    return index


class Promoters(Protocol):
    """What ``collect_genes`` and ``write_split`` read promoters from."""

    flank: int

    def locate(self, gene: Gene, genes_path: Path) -> None: ...

    def window(self, gene: Gene) -> tuple[np.ndarray, bool]: ...


class FastaPromoters:
    """Promoters stored one record per gene (2 x flank bp on its strand, TSS at index flank),
    read by id from Biopython's index: the genes are its ids in file order."""

    def __init__(self, path: Path, flank: int, stack: ExitStack) -> None:
        self.path, self.flank = Path(path), flank
        self.records = open_promoter_index(self.path, stack)
        self.genes = [Gene(gene_id, "", 0, "+", k) for k, gene_id in enumerate(self.records, 1)]

    def locate(self, gene: Gene, genes_path: Path) -> None:
        """Every gene of the list has its record: nothing to look up."""

    def _non_ascii(self, gene: Gene) -> BadSample:
        """The first byte that is no ASCII character, by its 1-based position in the record's
        sequence (Biopython's decode error counts from the start of the record)."""
        header, _, body = self.records.get_raw(gene.gene_id).partition(b"\n")
        sequence = b"".join(body.split())
        k = next((i for i, byte in enumerate(sequence) if byte > 127), None)
        where = "in its header line" if k is None else f"at position {k + 1}"
        byte = next(b for b in header if b > 127) if k is None else sequence[k]
        return BadSample(
            self.path,
            f"gene {gene.gene_id} (record {gene.line}): non-ACGTN byte 0x{byte:02x} {where}",
        )

    def window(self, gene: Gene) -> tuple[np.ndarray, bool]:
        """The record's base codes as stored (never padded); a record of another length than
        2 x flank or a non-ACGTN character is a BadSample naming the gene."""
        try:
            sequence = str(self.records[gene.gene_id].seq)
        except UnicodeDecodeError:
            raise self._non_ascii(gene) from None
        if len(sequence) != 2 * self.flank:
            raise BadSample(
                self.path,
                f"gene {gene.gene_id} (record {gene.line}): {len(sequence)} bp, expected "
                f"2 x flank = {2 * self.flank} with the TSS at index {self.flank}",
            )
        raw = sequence.encode("ascii", "replace")  # one byte per character either way
        where = f"gene {gene.gene_id} (record {gene.line}): non-ACGTN character"
        codes = base_codes(raw, self.path, lambda k: f"{where} {sequence[k]!r} at position {k + 1}")
        return codes, False
