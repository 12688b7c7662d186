"""``sequence_encode``: genome + TSS table + expression (+ half-life features, proteins,
abundance) -> the layout's ``train.h5`` / ``valid.h5`` / ``test.h5`` (workflow.sequence.layout),
or a per-gene promoter FASTA in place of genome + TSS table, with the same tables. The tables
are read by workflow.sequence.tables, the promoters by workflow.sequence.promoters; the
published Xpresso files are imported by workflow.sequence.xpresso.

A damaged gene (non-ACGTN characters in its window, a TSS outside its chromosome or on an
unknown one, a promoter record of the wrong length, no expression or half-life values) is a
``BadSample`` under ``policy``; so is a damaged protein (a stop codon inside, a character that
is no amino acid), which under ``skip`` loses only the protein. A missing, truncated or
malformed file, duplicate ids, or too few genes left stop the stage. Nothing is written before
every gene has been checked, and the three split files appear together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from workflow.common.atomic import atomic_path, write_text
from workflow.common.errors import BadSample, InputError, Skips
from workflow.sequence.layout import (
    BLOCK,
    HALF_LIFE_FEATURES,
    LENGTH_FEATURES,
    SPLITS,
    create_promoter,
)
from workflow.sequence.promoters import (
    ONE_HOT,
    FastaPromoters,
    PromoterReader,
    Promoters,
    open_genome,
)
from workflow.sequence.tables import (
    AA_CODES,
    Gene,
    check_protein,
    read_proteins,
    read_tss,
    read_values,
)

log = logging.getLogger("lsai.sequence.encode")


@dataclass
class Usable:
    gene: Gene
    expression: float
    halflife: list[float]
    protein: str | None
    abundance: float | None


def split_genes(
    n: int, val: int, test: int, seed: int, where: Path, *, xpresso_layout: bool = False
) -> dict[str, np.ndarray]:
    """Seeded random test and validation genes, the rest for training (indices in order).

    ``xpresso_layout``: its ``setup_training_files.py`` way instead - the genes shuffled as pandas'
    ``sample(random_state=seed)`` does (NumPy's legacy ``RandomState(seed).permutation``; Xpresso
    seeds 1), then training, validation and test genes in that order, as consecutive blocks."""
    if n < val + test + 1:
        raise InputError(
            where,
            f"{n} usable genes: too few for {val} validation + {test} test genes and a "
            "training split (lower val_genes / test_genes)",
        )
    if xpresso_layout:
        order = np.random.RandomState(seed).permutation(n)
        cut = n - val - test
        return {"train": order[:cut], "val": order[cut : cut + val], "test": order[cut + val :]}
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


def transform_halflife(values: np.ndarray, *, xpresso_layout: bool = False) -> np.ndarray:
    """log10(x + 0.1) for the lengths (as the Xpresso paper describes), the rest as they are;
    ``xpresso_layout``: ORFEXONDENSITY too, as its ``setup_training_files.py`` does."""
    out = values.astype(np.float64).copy()
    logged = LENGTH_FEATURES + (("ORFEXONDENSITY",) if xpresso_layout else ())
    columns = [HALF_LIFE_FEATURES.index(f) for f in logged]
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
    *,
    log_ratio: bool = False,
) -> tuple[list[Usable], int]:
    """Check every gene (and protein) before anything is written; the usable ones and how
    many of them are N-padded (``log_ratio``: abundances are log ratios, 0 is a level)."""
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
                if not log_ratio:  # a level of 0 has no log: no label
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
    abundance_scale: str = "linear",
) -> dict[str, int]:
    """Write ``out_dir``/train.h5, valid.h5, test.h5 and ``skipped``; genes per split.

    The promoters come from ``genome`` + ``tss`` or, in their place, from the per-gene
    ``promoters`` FASTA (keyword-only, so positional callers keep the genome route).

    Labels are log10(expression + 0.1) and log10(abundance), half-life features log10(x + 0.1)
    for the lengths; all z-scored with the training split's statistics. Without a half-life
    table ``data`` is all zero; without proteins the protein arrays are left out. A gene
    without a protein, or whose abundance is 0 or NA, has a NaN ``protein_label``. With
    ``abundance_scale`` "log_ratio" the abundances are log ratios already (CPTAC-style
    proteomes): used as they are, negative and zero values included, only NA lost.

    ``xpresso_layout`` writes Xpresso's files instead: its promoter windows (TSS at F - 1 on
    the + strand, genes whose window leaves the chromosome skipped), ORFEXONDENSITY logged
    too, z-scores over all genes (its ``preprocessing.scale`` of the whole table, before the
    split) and its shuffled block split (``split_genes``).
    """
    if (proteins is None) != (abundance is None):
        given = proteins if proteins is not None else abundance
        raise InputError(given, "proteins and an abundance table go together: give both")
    check_sources(genome, tss, promoters)
    flank = int(settings["flank"])
    xpresso = bool(settings.get("xpresso_layout", False))
    if abundance_scale not in ("linear", "log_ratio"):
        raise InputError(abundance or "encode", f"unknown abundance scale {abundance_scale!r}")
    log_ratio = abundance_scale == "log_ratio"
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
            "abundance": read_values(
                Path(abundance), ("abundance",), "abundance table", negative=log_ratio
            )
            if abundance
            else None,
        }
        reader: Promoters = (
            fasta
            if fasta is not None
            else PromoterReader(
                open_genome(Path(genome), stack), Path(genome), flank, xpresso_layout=xpresso
            )
        )
        usable, padded = collect_genes(
            genes, reader, paths, tables, policy, skips, log_ratio=log_ratio
        )
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
            xpresso_layout=xpresso,
        )
        train = split["train"]
        fit = np.arange(len(usable)) if xpresso else train  # the rows z-scores are fitted on
        label, label_mean, label_std = zscore(
            np.log10(np.array([u.expression for u in usable]) + 0.1), fit
        )
        if halflife:
            values = np.array([u.halflife for u in usable])
            data, _, _ = zscore(transform_halflife(values, xpresso_layout=xpresso), fit)
        else:
            data = np.zeros((len(usable), len(HALF_LIFE_FEATURES)))
            log.info("no half-life table: data is all zero")
        attrs: dict[str, Any] = {
            "flank": flank,
            "label_mean": float(label_mean),
            "label_std": float(label_std),
            "source": "encode",
            "xpresso_layout": xpresso,
        }
        arrays = {"label": label, "data": data}
        if max_protein is not None:
            levels = np.array([np.nan if u.abundance is None else u.abundance for u in usable])
            if not np.isfinite(levels[train]).any():
                raise InputError(
                    abundance,
                    "no training gene has both a protein and an abundance"
                    + ("" if log_ratio else " above 0"),
                )
            arrays["protein_label"], p_mean, p_std = zscore(
                levels if log_ratio else np.log10(levels), fit
            )
            attrs["abundance_scale"] = abundance_scale
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


SOURCES = ("genome", "tss", "promoters", "expression", "halflife", "proteins", "abundance")


def encode_stage(
    inputs: Mapping[str, Path | None],
    xpresso: Path | None,
    out_dir: Path,
    skipped: Path,
    settings: Mapping[str, Any],
    policy: str,
    abundance_scale: str = "linear",
) -> dict[str, int]:
    """The encode stage from whichever source is given: the published ``xpresso`` HDF5 files
    (imported as they are, nothing skipped), or ``inputs`` (:data:`SOURCES`: genome + TSS
    table, or a promoters FASTA, with the expression table and the optional extras)."""
    if xpresso:
        from workflow.sequence.xpresso import import_xpresso

        counts = import_xpresso(xpresso, out_dir)
        write_text(skipped, Skips().to_tsv())
    else:
        fasta = inputs.get("promoters") is not None  # promoters in place of genome + TSS
        needed = ("promoters", "expression") if fasta else ("genome", "tss", "expression")
        missing = [k for k in needed if inputs.get(k) is None]
        if missing:
            raise InputError(
                "encode", f"needs --{' --'.join(missing)} (inputs: --genome --tss --expression, "
                "--promoters --expression, or --xpresso)",
            )  # fmt: skip
        counts = encode_dataset(
            inputs.get("genome"), inputs.get("tss"), inputs["expression"], inputs.get("halflife"),
            inputs.get("proteins"), inputs.get("abundance"), out_dir, skipped, settings, policy,
            promoters=inputs.get("promoters"), abundance_scale=abundance_scale,
        )  # fmt: skip
    log.info("encoded genes per split: %s -> %s", counts, out_dir)
    return counts
