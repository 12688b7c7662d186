"""``sequence_encode``: genome + TSS table + expression (+ half-life features, proteins,
abundance) -> the layout's ``train.h5`` / ``valid.h5`` / ``test.h5`` (workflow.sequence.layout);
or a per-gene promoter FASTA in place of genome + TSS table, with the same tables; or the
published Xpresso HDF5 files, checked and rewritten in the same layout.

Promoter convention. For a TSS at 1-based ``position`` (0-based ``p = position - 1``) and
``flank`` F, row ``i`` (0 <= i < 2F) of a gene's stored promoter holds

- ``+`` strand: genome base ``p - F + i`` (the window [p - F, p + F) read as it is);
- ``-`` strand: the complement of genome base ``p + F - i`` (the window [p - F + 1, p + F + 1)
  reverse complemented),

so row F is the TSS base on both strands, upstream to its left and downstream to its right
(Xpresso: F = 10,000, TSS at index 10,000 of 20,000). Rows beyond a chromosome end are N
(all zero): such genes are counted and logged as N-padded.

A promoter FASTA holds these rows already: one record per gene id, exactly 2F bp on the gene's
strand with the TSS at 0-based index F, in the order of the genes (its file order). It is read
with Biopython's lazy index, one record at a time, so a genome-scale set never sits in memory;
nothing is padded.

A damaged gene (non-ACGTN characters in its window, a TSS outside its chromosome or on an
unknown one, a promoter record of the wrong length, no expression or half-life values) is a
``BadSample`` under ``policy``; so is a damaged protein (a stop codon inside, a character that
is no amino acid), which under ``skip`` loses only the protein. A missing, truncated or
malformed file, duplicate ids, or too few genes left stop the stage. Nothing is written before
every gene has been checked, and the three split files appear together.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import pyfaidx
from Bio import SeqIO, bgzf
from tqdm import tqdm

from workflow.common.atomic import atomic_path, write_text
from workflow.common.errors import BadSample, InputError, Skips
from workflow.sequence.layout import (
    AMINO_ACIDS,
    DNA,
    HALF_LIFE_FEATURES,
    LENGTH_FEATURES,
    SPLITS,
    create_promoter,
)

log = logging.getLogger("lsai.sequence.encode")

MISSING = {"", "NA", "N/A", "NaN", "nan", "."}
#: ASCII -> 0-3 (A, C, G, T), 4 (N), 255 (anything else).
BASE_CODES = np.full(256, 255, dtype=np.uint8)
for _k, _b in enumerate(DNA + "N"):
    BASE_CODES[ord(_b)] = BASE_CODES[ord(_b.lower())] = _k
COMPLEMENT_CODES = np.array([3, 2, 1, 0, 4], dtype=np.uint8)
ONE_HOT = np.vstack([np.eye(4, dtype=bool), np.zeros((1, 4), dtype=bool)])
#: ASCII -> 1-based AMINO_ACIDS code, 0 for anything else.
AA_CODES = np.zeros(256, dtype=np.uint8)
for _k, _a in enumerate(AMINO_ACIDS, start=1):
    AA_CODES[ord(_a)] = _k
XPRESSO_KEYS = ("promoter", "data", "label", "geneName")
BLOCK = 128  # genes per HDF5 write / copy


@dataclass(frozen=True)
class Gene:
    gene_id: str
    chrom: str
    position: int  # 1-based TSS base (0 for a gene of a promoter FASTA)
    strand: str
    line: int  # of the TSS table, or the record number in a promoter FASTA


def read_tsv(path: Path, required: Sequence[str], what: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a tab-separated table with a header line; blank lines are
    skipped. A missing file, a missing column or a row with a wrong field count is an
    InputError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if header is None:
                raise InputError(path, f"empty {what} (expected a header line)")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(
                    path, f"not a {what}: missing column(s) {missing} in the header {header}"
                )
            for row in reader:
                if not row or not any(v.strip() for v in row):
                    continue
                if len(row) != len(header):
                    raise InputError(
                        path,
                        f"line {reader.line_num}: {len(row)} tab-separated fields, "
                        f"the header has {len(header)}",
                    )
                yield reader.line_num, {h: v.strip() for h, v in zip(header, row, strict=True)}
    except UnicodeDecodeError as err:
        raise InputError(path, f"not a text {what}: {err}") from None
    except csv.Error as err:
        raise InputError(path, f"not a readable {what}: {err}") from None


def unique_rows(path: Path, rows: Iterator[tuple[int, dict]]) -> dict[str, tuple[int, dict]]:
    """gene_id -> (line, row); a gene listed twice is an InputError naming both lines."""
    table: dict[str, tuple[int, dict]] = {}
    for line, row in rows:
        gene = row["gene_id"]
        if not gene:
            raise InputError(path, f"line {line}: empty gene_id")
        if gene in table:
            raise InputError(path, f"gene {gene} listed twice (lines {table[gene][0]} and {line})")
        table[gene] = (line, row)
    return table


def number(path: Path, line: int, column: str, text: str, negative: bool = False) -> float | None:
    """A finite number, or None for an empty / NA field; text is an InputError."""
    if text in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"line {line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        return None
    if value < 0 and not negative:
        raise InputError(path, f"line {line}: {column} {text!r} is negative")
    return value


def read_tss(path: Path) -> list[Gene]:
    """The genes to encode, in table order."""
    genes = []
    table = unique_rows(
        path, read_tsv(path, ("gene_id", "chrom", "position", "strand"), "TSS table")
    )
    for gene_id, (line, row) in table.items():
        try:
            position = int(row["position"])
        except ValueError:
            raise InputError(
                path, f"line {line}: position {row['position']!r} is not an integer"
            ) from None
        if row["strand"] not in ("+", "-"):
            raise InputError(path, f"line {line}: strand {row['strand']!r} is not + or -")
        genes.append(Gene(gene_id, row["chrom"], position, row["strand"], line))
    if not genes:
        raise InputError(path, "lists no gene")
    return genes


def read_values(
    path: Path, columns: Sequence[str], what: str
) -> dict[str, tuple[int, list[float | None]]]:
    """gene_id -> (line, the numeric columns; None where empty or NA)."""
    table = unique_rows(path, read_tsv(path, ("gene_id", *columns), what))
    return {
        gene: (line, [number(path, line, c, row[c]) for c in columns])
        for gene, (line, row) in table.items()
    }


def read_proteins(path: Path) -> dict[str, str]:
    """gene_id (the record id) -> upper-case sequence; a record id twice is an InputError
    naming both records."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "protein FASTA not found")
    proteins: dict[str, str] = {}
    number_of: dict[str, int] = {}
    try:
        for k, record in enumerate(SeqIO.parse(path, "fasta"), start=1):
            if not record.id:
                raise InputError(path, f"record {k} has no id")
            if record.id in proteins:
                raise InputError(
                    path,
                    f"protein {record.id} twice (records {number_of[record.id]} and {k})",
                )
            proteins[record.id], number_of[record.id] = str(record.seq).upper(), k
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a protein FASTA: {str(err).splitlines()[0]}") from None
    if not proteins:
        raise InputError(path, "no FASTA record (a record starts with '>')")
    return proteins


def check_protein(path: Path, gene: str, seq: str) -> str:
    """The protein without its terminal stop; a stop inside or a character that is no
    amino acid is a BadSample (the gene stays, the protein goes)."""
    body = seq[:-1] if seq.endswith("*") else seq
    if not body:
        raise BadSample(path, f"protein {gene} is empty")
    stop = body.find("*")
    if stop >= 0:
        raise BadSample(
            path, f"protein {gene}: stop codon '*' inside, at residue {stop + 1} of {len(seq)}"
        )
    codes = AA_CODES[np.frombuffer(body.encode("ascii", "replace"), dtype=np.uint8)]
    bad = np.flatnonzero(codes == 0)
    if bad.size:
        raise BadSample(
            path,
            f"protein {gene}: {body[bad[0]]!r} at residue {bad[0] + 1} is no amino acid "
            f"({AMINO_ACIDS} or a terminal *)",
        )
    return body


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


def base_codes(raw: bytes) -> tuple[np.ndarray, int | None]:
    """ASCII bases -> codes (0-3 ACGT, 4 N, either case) and the index of the first character
    that is none of them (None when all are)."""
    codes = BASE_CODES[np.frombuffer(raw, dtype=np.uint8)]
    bad = np.flatnonzero(codes == 255)
    return codes, int(bad[0]) if bad.size else None


class PromoterReader:
    """Strand-aware TSS +- flank windows of one genome as base codes (0-3 ACGT, 4 N)."""

    def __init__(self, fasta: pyfaidx.Fasta, path: Path, flank: int) -> None:
        self.fasta, self.path, self.flank = fasta, Path(path), flank
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

    def window(self, gene: Gene) -> tuple[np.ndarray, bool]:
        """The gene's 2 x flank base codes in its orientation and whether they run past a
        chromosome end (N-padded); a non-ACGTN character is a BadSample naming it."""
        f, p, length = self.flank, gene.position - 1, self.lengths[gene.chrom]
        lo = p - f if gene.strand == "+" else p - f + 1
        a, b = max(lo, 0), min(lo + 2 * f, length)
        try:
            raw = self.fasta[gene.chrom][a:b].encode("ascii")
        except UnicodeError:
            raise BadSample(
                self.path, f"gene {gene.gene_id}: non-ASCII bytes in {gene.chrom}:{a + 1}-{b}"
            ) from None
        if len(raw) != b - a:
            raise InputError(self.path, f"{gene.chrom} is shorter than its index says: truncated")
        part, k = base_codes(raw)
        if k is not None:
            raise BadSample(
                self.path,
                f"gene {gene.gene_id}: non-ACGTN character {chr(raw[k])!r} at "
                f"{gene.chrom}:{a + k + 1}",
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
        codes, k = base_codes(raw)
        if k is not None:
            raise BadSample(
                self.path,
                f"gene {gene.gene_id} (record {gene.line}): non-ACGTN character "
                f"{sequence[k]!r} at position {k + 1}",
            )
        return codes, False


@dataclass
class Usable:
    gene: Gene
    expression: float
    halflife: list[float]
    protein: str | None
    abundance: float | None


def split_genes(n: int, val: int, test: int, seed: int, where: Path) -> dict[str, np.ndarray]:
    """Seeded random test and validation genes, the rest for training (indices in order)."""
    if n < val + test + 1:
        raise InputError(
            where,
            f"{n} usable genes: too few for {val} validation + {test} test genes and a "
            "training split (lower val_genes / test_genes)",
        )
    order = np.random.default_rng(seed).permutation(n)
    return {
        "train": np.sort(order[val + test :]),
        "val": np.sort(order[test : test + val]),
        "test": np.sort(order[:test]),
    }


def zscore(values: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values z-scored with the training rows' finite mean and sd (sd 0 -> 1)."""
    mean = np.nanmean(values[train], axis=0)
    std = np.nanstd(values[train], axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return (values - mean) / std, mean, std


def transform_halflife(values: np.ndarray) -> np.ndarray:
    """log10(x + 0.1) for the lengths (Xpresso's transform), the rest as they are."""
    out = values.astype(np.float64).copy()
    columns = [HALF_LIFE_FEATURES.index(f) for f in LENGTH_FEATURES]
    out[:, columns] = np.log10(out[:, columns] + 0.1)
    return out


def protein_row(body: str | None, width: int) -> tuple[np.ndarray, int]:
    """1-based amino-acid codes truncated to ``width`` (0 padding), and the full length."""
    row = np.zeros(width, dtype=np.uint8)
    if body is None:
        return row, 0
    codes = AA_CODES[np.frombuffer(body.encode("ascii"), dtype=np.uint8)]
    row[: min(len(codes), width)] = codes[:width]
    return row, len(codes)


def _bad(err: BadSample, item: str, policy: str, skips: Skips) -> None:
    skips.handle(err, item, policy, log)


def collect_genes(
    genes: list[Gene],
    reader: Promoters,
    paths: Mapping[str, Path | None],
    tables: Mapping[str, Any],
    policy: str,
    skips: Skips,
) -> tuple[list[Usable], int]:
    """Check every gene (and protein) before anything is written; the usable ones and how
    many of them are N-padded."""
    usable, padded = [], 0
    expression, halflife = tables["expression"], tables["halflife"]
    proteins, abundance = tables["proteins"], tables["abundance"]
    for gene in tqdm(genes, desc="check genes", mininterval=5):
        try:
            reader.locate(gene, paths["genes"])
            line, (value,) = expression.get(gene.gene_id, (None, [None]))
            if line is None:
                raise BadSample(paths["expression"], f"gene {gene.gene_id} is not in the table")
            if value is None:
                raise BadSample(
                    paths["expression"], f"line {line}: gene {gene.gene_id}: no expression value"
                )
            features = [0.0] * len(HALF_LIFE_FEATURES)
            if halflife is not None:
                line, features = halflife.get(gene.gene_id, (None, []))
                if line is None:
                    raise BadSample(paths["halflife"], f"gene {gene.gene_id} is not in the table")
                empty = [f for f, v in zip(HALF_LIFE_FEATURES, features, strict=True) if v is None]
                if empty:
                    raise BadSample(
                        paths["halflife"], f"line {line}: gene {gene.gene_id}: no value for {empty}"
                    )
            _, was_padded = reader.window(gene)
        except BadSample as err:
            _bad(err, gene.gene_id, policy, skips)
            continue
        padded += was_padded
        body = level = None
        if proteins is not None and gene.gene_id in proteins:
            try:
                body = check_protein(paths["proteins"], gene.gene_id, proteins[gene.gene_id])
            except BadSample as err:
                _bad(err, f"{gene.gene_id} protein", policy, skips)
            if body is not None:
                _, (level,) = abundance.get(gene.gene_id, (None, [None]))
                level = level if level and level > 0 else None
        usable.append(Usable(gene, value, features, body, level))
    return usable, padded


def write_split(
    path: Path,
    name: str,
    rows: list[Usable],
    reader: Promoters,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    max_protein: int | None,
) -> None:
    """One split file in the layout; promoters written ``BLOCK`` genes at a time."""
    n, length = len(rows), 2 * reader.flank
    with h5py.File(path, "w") as h5:
        promoter = create_promoter(h5, n, length)
        for start in tqdm(range(0, n, BLOCK), desc=f"encode {name}", mininterval=5):
            block = rows[start : start + BLOCK]
            promoter[start : start + len(block)] = ONE_HOT[
                np.stack([reader.window(r.gene)[0] for r in block])
            ]
        h5["data"] = arrays["data"].astype(np.float32)
        h5["label"] = arrays["label"].astype(np.float32)
        h5["geneName"] = np.array([r.gene.gene_id.encode() for r in rows])
        if max_protein is not None:
            coded = [protein_row(r.protein, max_protein) for r in rows]
            h5["protein"] = np.stack([c for c, _ in coded]).reshape(n, max_protein)
            h5["protein_length"] = np.array([k for _, k in coded], dtype=np.int32)
            h5["protein_label"] = arrays["protein_label"].astype(np.float32)
        h5.attrs.update(attrs)


def check_sources(genome: Path | None, tss: Path | None, promoters: Path | None) -> None:
    """Exactly one promoter source: genome + TSS table, or the promoter FASTA."""
    if promoters is not None:
        if genome is not None or tss is not None:
            raise InputError(
                promoters, "give a promoter FASTA or genome + tss, not both (they both place "
                "the promoters)",
            )  # fmt: skip
    elif genome is None or tss is None:
        raise InputError(
            genome or tss or "encode",
            "needs genome + tss (the windows are cut at the TSS), or a promoter FASTA",
        )


def encode_dataset(
    genome: Path | None,
    tss: Path | None,
    expression: Path,
    halflife: Path | None,
    proteins: Path | None,
    abundance: Path | None,
    out_dir: Path,
    skipped: Path,
    settings: Mapping[str, Any],
    policy: str,
    *,
    promoters: Path | None = None,
) -> dict[str, int]:
    """Write ``out_dir``/train.h5, valid.h5, test.h5 and ``skipped``; genes per split.

    The promoters come from ``genome`` + ``tss`` or, in their place, from the per-gene
    ``promoters`` FASTA (keyword-only, so positional callers keep the genome route).

    Labels are log10(expression + 0.1) and log10(abundance), half-life features log10(x + 0.1)
    for the lengths; all z-scored with the training split's statistics. Without a half-life
    table ``data`` is all zero; without proteins the protein arrays are left out. A gene
    without a protein, or whose abundance is 0 or NA, has a NaN ``protein_label``.
    """
    if (proteins is None) != (abundance is None):
        given = proteins if proteins is not None else abundance
        raise InputError(given, "proteins and an abundance table go together: give both")
    check_sources(genome, tss, promoters)
    flank = int(settings["flank"])
    max_protein = int(settings["max_protein_length"]) if proteins is not None else None
    paths = {
        "genes": Path(promoters if promoters is not None else tss),  # lists the genes
        "expression": Path(expression),
        "halflife": Path(halflife) if halflife else None,
        "proteins": Path(proteins) if proteins else None,
    }
    skips = Skips()
    out_dir = Path(out_dir)
    with ExitStack() as stack:
        # The gene list first (the TSS table or the FASTA's ids), the tables, then the genome.
        fasta = FastaPromoters(paths["genes"], flank, stack) if promoters is not None else None
        genes = fasta.genes if fasta is not None else read_tss(paths["genes"])
        tables = {
            "expression": read_values(paths["expression"], ("expression",), "expression table"),
            "halflife": read_values(Path(halflife), HALF_LIFE_FEATURES, "half-life table")
            if halflife
            else None,
            "proteins": read_proteins(Path(proteins)) if proteins else None,
            "abundance": read_values(Path(abundance), ("abundance",), "abundance table")
            if abundance
            else None,
        }
        reader: Promoters = (
            fasta
            if fasta is not None
            else PromoterReader(open_genome(Path(genome), stack), Path(genome), flank)
        )
        usable, padded = collect_genes(genes, reader, paths, tables, policy, skips)
        if not usable:
            raise InputError(paths["genes"], f"no gene left ({len(skips)} skipped)")
        log.info(
            "%d of %d genes usable, %d skipped; %d N-padded at a chromosome end (flank %d)",
            len(usable), len(genes), len(genes) - len(usable), padded, flank,
        )  # fmt: skip
        split = split_genes(
            len(usable),
            int(settings["val_genes"]),
            int(settings["test_genes"]),
            int(settings["split_seed"]),
            paths["genes"],
        )
        train = split["train"]
        label, label_mean, label_std = zscore(
            np.log10(np.array([u.expression for u in usable]) + 0.1), train
        )
        if halflife:
            data, _, _ = zscore(transform_halflife(np.array([u.halflife for u in usable])), train)
        else:
            data = np.zeros((len(usable), len(HALF_LIFE_FEATURES)))
            log.info("no half-life table: data is all zero")
        attrs: dict[str, Any] = {
            "flank": flank,
            "label_mean": float(label_mean),
            "label_std": float(label_std),
            "source": "encode",
        }
        arrays = {"label": label, "data": data}
        if max_protein is not None:
            levels = np.array([np.nan if u.abundance is None else u.abundance for u in usable])
            if not np.isfinite(levels[train]).any():
                raise InputError(
                    abundance, "no training gene has both a protein and a positive abundance"
                )
            arrays["protein_label"], p_mean, p_std = zscore(np.log10(levels), train)
            attrs["protein_label_mean"], attrs["protein_label_std"] = float(p_mean), float(p_std)
            truncated = sum(len(u.protein or "") > max_protein for u in usable)
            log.info(
                "%d genes with a protein, %d of them with an abundance; %d proteins truncated "
                "to %d residues",
                sum(u.protein is not None for u in usable), int(np.isfinite(levels).sum()),
                truncated, max_protein,
            )  # fmt: skip
        for name, rows in split.items():
            path = out_dir / SPLITS[name]
            tmp = stack.enter_context(atomic_path(path))
            write_split(
                tmp,
                name,
                [usable[i] for i in rows],
                reader,
                {k: v[rows] for k, v in arrays.items()},
                attrs,
                max_protein,
            )
            proteins_note = (
                f", {int(np.isfinite(arrays['protein_label'][rows]).sum())} with a protein label"
                if max_protein is not None
                else ""
            )
            log.info("%s: %d genes%s -> %s", name, len(rows), proteins_note, path)
    write_text(skipped, skips.to_tsv())
    log.info("skipped %d bad samples (listed in %s)", len(skips), skipped)
    return {name: len(rows) for name, rows in split.items()}


def check_xpresso(path: Path) -> tuple[int, int]:
    """(genes, promoter length) of one published Xpresso split file, or an InputError
    naming what is missing or of the wrong shape or type."""
    if not path.is_file():
        raise InputError(path, f"Xpresso split file not found (expected {list(SPLITS.values())})")
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in XPRESSO_KEYS if not isinstance(h5.get(k), h5py.Dataset)]
            if missing:
                raise InputError(path, f"lacks dataset(s) {missing} of Xpresso's {XPRESSO_KEYS}")
            promoter, data, label, names = (h5[k] for k in XPRESSO_KEYS)
            n = promoter.shape[0] if promoter.ndim else 0
            problems = []
            if promoter.ndim != 3 or promoter.shape[2] != 4 or promoter.shape[1] % 2:
                problems.append(f"promoter shape {promoter.shape}, expected (N, 20000, 4)")
            if promoter.dtype != bool and promoter.dtype.kind not in "ui":
                problems.append(f"promoter dtype {promoter.dtype}, expected bool one-hot")
            if data.shape != (n, len(HALF_LIFE_FEATURES)) or data.dtype.kind not in "fiu":
                problems.append(f"data {data.shape} {data.dtype}, expected ({n}, 8) float")
            if label.shape != (n,) or label.dtype.kind not in "fiu":
                problems.append(f"label {label.shape} {label.dtype}, expected ({n},) float")
            if names.shape != (n,) or names.dtype.kind not in "SOU":
                problems.append(f"geneName {names.shape} {names.dtype}, expected ({n},) strings")
            if problems:
                raise InputError(path, "not in Xpresso's layout: " + "; ".join(problems))
            if n == 0:
                raise InputError(path, "holds no gene")
            return n, int(promoter.shape[1])
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file (truncated or not HDF5): {err}") from None


def check_gene_names(source_dir: Path) -> None:
    """Each gene once over the three split files: a gene in two splits leaks test genes into
    training, and one twice in a split weighs it double."""
    where: dict[str, str] = {}
    for file in SPLITS.values():
        with h5py.File(source_dir / file, "r") as h5:
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in h5["geneName"][()]]
        for name in names:
            if name in where:
                raise InputError(source_dir / file, f"gene {name!r} is also in {where[name]} "
                                 "(a gene belongs to one split, once)")  # fmt: skip
            where[name] = file


def copy_xpresso(source: Path, target: Path) -> int:
    """Rewrite one Xpresso split in the layout, ``BLOCK`` genes at a time; genes copied."""
    try:
        with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
            n, length = src["promoter"].shape[:2]
            out = create_promoter(dst, n, length)
            for start in tqdm(range(0, n, BLOCK), desc=source.name, mininterval=5):
                block = src["promoter"][start : start + BLOCK]
                if block.dtype != bool:
                    if ((block != 0) & (block != 1)).any():
                        raise InputError(source, "promoter holds values other than 0 and 1")
                    block = block.astype(bool)
                if (block.sum(axis=2) > 1).any():
                    raise InputError(
                        source, f"promoter of genes {start}-{start + len(block) - 1} is not "
                        "one-hot (two bases at one position)",
                    )  # fmt: skip
                out[start : start + len(block)] = block
            for key in ("data", "label"):
                values = src[key][()].astype(np.float32)
                if not np.isfinite(values).all():
                    raise InputError(source, f"{key} holds NaN or infinite values")
                dst[key] = values
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in src["geneName"][()]]
            dst["geneName"] = np.array([v.encode() for v in names])
            dst.attrs.update(
                {"flank": length // 2, "label_mean": 0.0, "label_std": 1.0, "source": "xpresso"}
            )
    except OSError as err:
        raise InputError(source, f"unreadable HDF5 data (truncated?): {err}") from None
    return int(n)


def import_xpresso(source_dir: Path, out_dir: Path) -> dict[str, int]:
    """The published Xpresso folder (train.h5, valid.h5, test.h5) -> ``out_dir`` in the layout
    (mrna task only: no protein arrays); genes per split. All three files are checked before
    any is written, and they appear together."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not source_dir.is_dir():
        raise InputError(source_dir, "Xpresso folder not found")
    shapes = {name: check_xpresso(source_dir / file) for name, file in SPLITS.items()}
    lengths = {length for _, length in shapes.values()}
    if len(lengths) != 1:
        raise InputError(source_dir, f"the splits' promoters differ in length: {sorted(lengths)}")
    check_gene_names(source_dir)
    counts = {}
    with ExitStack() as stack:
        for name, file in SPLITS.items():
            tmp = stack.enter_context(atomic_path(out_dir / file))
            counts[name] = copy_xpresso(source_dir / file, tmp)
            log.info("%s: %d genes -> %s", name, counts[name], out_dir / file)
    return counts
