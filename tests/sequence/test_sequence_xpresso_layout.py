"""``xpresso_layout``: the encode stage writes Xpresso's files as its own scripts make them.

The expected files are built here the way Xpresso's scripts build them, with separate code: a
BED of [P - F, P + F) per TSS kept when its start is > 0 (``extract_promoters.pl`` and the CAGE
one-liner of ``runme.sh``), ``bedtools getfasta -s`` semantics (0-based half-open interval,
reverse complement on the - strand, intervals past the chromosome end skipped) done with
Biopython, then ``setup_training_files.py``'s ``preprocess``: one table, log10(x + 0.1) on its
columns 0-4 and 8 (expression, the four lengths, ORFEXONDENSITY), pandas' ``sample`` with
``random_state=1``, every column scaled over all genes (population sd), its bool one-hot (any
other character all zero), and train / valid / test as consecutive blocks of the shuffled table.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from Bio import SeqIO

from tests.sequence.conftest import SMALL, demo_inputs
from workflow.sequence.encode import encode_dataset

FEATURES = ["UTR5LEN", "CDSLEN", "INTRONLEN", "UTR3LEN", "UTR5GC", "CDSGC", "UTR3GC",
            "ORFEXONDENSITY"]  # fmt: skip
VAL, TEST = 15, 12


def xpresso_promoters(genome: Path, tss: Path, flank: int) -> dict[str, str]:
    """gene -> promoter as Xpresso's BED + ``bedtools getfasta -s`` cut it (case kept)."""
    chromosomes = {r.id: r.seq for r in SeqIO.parse(genome, "fasta")}
    promoters = {}
    for gene, chrom, position, strand in pd.read_csv(tss, sep="\t").itertuples(index=False):
        start, stop = position - flank, position + flank  # BED: 0-based start, end exclusive
        if start <= 0 or stop > len(chromosomes[chrom]):  # the Perl's filter; bedtools' skip
            continue
        piece = chromosomes[chrom][start:stop]
        promoters[gene] = str(piece.reverse_complement() if strand == "-" else piece)
    return promoters


def xpresso_one_hot(sequences: list[str]) -> np.ndarray:
    """``setup_training_files.one_hot``: A C G T in either case, anything else all zero."""
    index = {"A": 0, "C": 1, "G": 2, "T": 3, "a": 0, "c": 1, "g": 2, "t": 3}
    out = np.zeros((len(sequences), len(sequences[0]), 4), dtype=bool)
    for i, sequence in enumerate(sequences):
        for j, base in enumerate(sequence):
            if base in index:
                out[i, j, index[base]] = True
    return out


def xpresso_files(root: Path, flank: int) -> dict[str, dict[str, np.ndarray]]:
    """split -> arrays, from the demo's files the way Xpresso's scripts make them."""
    inputs = demo_inputs(root)
    promoters = xpresso_promoters(inputs["genome"], inputs["tss"], flank)
    expression = pd.read_csv(inputs["expression"], sep="\t", index_col=0)["expression"]
    halflife = pd.read_csv(inputs["halflife"], sep="\t", index_col=0)[FEATURES]
    table = pd.DataFrame({"EXPRESSION": expression}).join(halflife)
    table = table.loc[list(promoters)]  # the genes in the TSS table's order
    table["PROMOTER"] = [promoters[g] for g in table.index]
    logged = table.columns[[0, 1, 2, 3, 4, 8]]
    table[logged] = np.log10(table[logged] + 0.1)
    table = table.sample(table.shape[0], replace=False, random_state=1)
    numeric = table.columns[:9]
    values = table[numeric].to_numpy(dtype=float)
    sd = values.std(axis=0)
    table[numeric] = (values - values.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    train = table.shape[0] - VAL - TEST
    blocks = {"train.h5": (0, train), "valid.h5": (train, train + VAL),
              "test.h5": (train + VAL, train + VAL + TEST)}  # fmt: skip
    return {
        name: {
            "promoter": xpresso_one_hot(list(table["PROMOTER"].iloc[a:b])),
            "data": table[numeric[1:9]].iloc[a:b].to_numpy(),
            "label": table["EXPRESSION"].iloc[a:b].to_numpy(),
            "geneName": np.array(table.index[a:b]),
        }
        for name, (a, b) in blocks.items()
    }


@pytest.fixture(scope="module")
def encoded(seq_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xpresso_layout")
    settings = {"flank": SMALL.flank, "max_protein_length": 100, "val_genes": VAL,
                "test_genes": TEST, "split_seed": 1, "xpresso_layout": True}  # fmt: skip
    encode_dataset(
        **demo_inputs(seq_demo), out_dir=out, skipped=out / "skipped.tsv", settings=settings,
        policy="skip",
    )  # fmt: skip
    return out


def test_encoded_files_are_the_ones_xpresso_s_scripts_make(seq_demo: Path, encoded: Path):
    expected = xpresso_files(seq_demo, SMALL.flank)
    for name, arrays in expected.items():
        with h5py.File(encoded / name) as h5:
            assert [g.decode() for g in h5["geneName"][()]] == list(arrays["geneName"]), name
            np.testing.assert_array_equal(h5["promoter"][()], arrays["promoter"], err_msg=name)
            np.testing.assert_allclose(h5["data"][()], arrays["data"], atol=2e-6, err_msg=name)
            np.testing.assert_allclose(h5["label"][()], arrays["label"], atol=2e-6, err_msg=name)
            assert h5.attrs["xpresso_layout"]


def test_the_tss_sits_where_xpresso_s_files_have_it(seq_demo: Path, encoded: Path):
    """Index flank - 1 on the + strand, flank on the - strand; the window-edge genes (the demo
    places two within flank of a chromosome end) are skipped and listed, not N-padded."""
    tss = pd.read_csv(demo_inputs(seq_demo)["tss"], sep="\t", index_col=0)
    chromosomes = {r.id: r.seq for r in SeqIO.parse(demo_inputs(seq_demo)["genome"], "fasta")}
    f = SMALL.flank
    with h5py.File(encoded / "train.h5") as h5:
        names = [g.decode() for g in h5["geneName"][()]]
        promoters = h5["promoter"][()]
    strands = set()
    for name, promoter in zip(names, promoters, strict=True):
        chrom, position, strand = tss.loc[name, ["chrom", "position", "strand"]]
        base = chromosomes[chrom][position - 1].upper()
        if strand == "-":
            base = {"A": "T", "C": "G", "G": "C", "T": "A"}.get(base, "N")
        row = promoter[f - 1 if strand == "+" else f]
        assert "ACGT"[row.argmax()] == base if row.any() else base == "N", name
        strands.add(strand)
    assert strands == {"+", "-"}
    skipped = pd.read_csv(encoded / "skipped.tsv", sep="\t")
    assert len(skipped) == SMALL.edge_genes, skipped
    assert skipped.iloc[:, -1].str.contains("Xpresso's extraction drops such genes").all()


@pytest.mark.skipif(
    shutil.which("bedtools") is None, reason="bedtools missing: apt-get install bedtools"
)
def test_bedtools_getfasta_cuts_the_same_promoters(seq_demo: Path, encoded: Path, tmp_path):
    """The real tool on the BED Xpresso's Perl writes (chrom, P - F, P + F, name, 0, strand)."""
    inputs, f = demo_inputs(seq_demo), SMALL.flank
    tss = pd.read_csv(inputs["tss"], sep="\t")
    bed = tmp_path / "promoters.bed"
    bed.write_text(
        "".join(
            f"{chrom}\t{position - f}\t{position + f}\t{gene}\t0\t{strand}\n"
            for gene, chrom, position, strand in tss.itertuples(index=False)
            if position - f > 0
        )
    )
    genome = tmp_path / "genome.fa"  # bedtools writes its .fai beside the genome
    genome.symlink_to(inputs["genome"])
    out = tmp_path / "promoters.fa"
    run = subprocess.run(
        ["bedtools", "getfasta", "-s", "-name", "-fi", genome, "-bed", bed, "-fo", out],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cut = {r.id.split("(")[0].split("::")[0]: str(r.seq) for r in SeqIO.parse(out, "fasta")}
    ours = {}
    for name in ("train.h5", "valid.h5", "test.h5"):
        with h5py.File(encoded / name) as h5:
            for gene, promoter in zip(h5["geneName"][()], h5["promoter"][()], strict=True):
                ours[gene.decode()] = promoter
    # bedtools skips (with a warning) the gene whose end runs past its chromosome
    assert set(cut) - set(ours) == set() and len(ours) == len(tss) - SMALL.edge_genes, run.stderr
    assert set(ours) == set(cut)
    for gene, promoter in ours.items():
        np.testing.assert_array_equal(promoter, xpresso_one_hot([cut[gene]])[0], err_msg=gene)
