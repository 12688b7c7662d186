"""The tables of ``sequence_encode``: TSS positions, per-gene values (expression, half-life
features, abundance) and protein sequences, each read with the line of any damage.

A damaged row (a missing or unparsable value, a protein with a stop codon inside or a
character that is no amino acid) is a ``BadSample``; a missing or malformed file, a missing
column or duplicate ids stop the stage.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from Bio import SeqIO

from workflow.common.errors import BadSample, InputError
from workflow.sequence.layout import (
    AMINO_ACIDS,
)

MISSING = {"", "NA", "N/A", "NaN", "nan", "."}
#: ASCII -> 1-based AMINO_ACIDS code, 0 for anything else.
AA_CODES = np.zeros(256, dtype=np.uint8)
for _k, _a in enumerate(AMINO_ACIDS, start=1):
    AA_CODES[ord(_a)] = _k


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
    path: Path, columns: Sequence[str], what: str, *, negative: bool = False
) -> dict[str, tuple[int, list[float | None]]]:
    """gene_id -> (line, the numeric columns; None where empty or NA); a negative value is an
    InputError unless ``negative`` (log ratios)."""
    table = unique_rows(path, read_tsv(path, ("gene_id", *columns), what))
    return {
        gene: (line, [number(path, line, c, row[c], negative) for c in columns])
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
