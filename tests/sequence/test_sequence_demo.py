"""The synthetic sequence demo: deterministic, real formats, planted signal, known ceilings."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pyfaidx
import pytest
from Bio import SeqIO

from tests.sequence.conftest import SMALL, read_encoded
from workflow.common.config import stage_settings
from workflow.common.errors import InputError
from workflow.sequence.demo import DemoSettings, write_demo
from workflow.sequence.layout import DEMO_FILES, HALF_LIFE_FEATURES, LENGTH_FEATURES


def files_of(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if not p.name.endswith(".fai")}


def test_same_seed_same_files(seq_demo, tmp_path):
    write_demo(tmp_path / "again", SMALL)
    assert files_of(tmp_path / "again") == files_of(seq_demo)
    write_demo(tmp_path / "other", dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    other = files_of(tmp_path / "other")
    assert all(other[name] != data for name, data in files_of(seq_demo).items())


def test_files_read_with_pyfaidx_biopython_and_pandas(seq_demo, seq_manifest):
    s = SMALL
    genome = pyfaidx.Fasta(str(seq_demo / DEMO_FILES["genome"]), sequence_always_upper=True)
    assert {k: len(v) for k, v in genome.items()} == seq_manifest["chromosomes"]
    for name, length in seq_manifest["chromosomes"].items():
        assert str(genome[name][: s.n_run]) == "N" * s.n_run
        assert set(str(genome[name][s.n_run : length - s.n_run])) == set("ACGT")
    raw = (seq_demo / DEMO_FILES["genome"]).read_text()
    assert re.search("[acgt]{50}", raw) and max(map(len, raw.splitlines())) == 60  # soft-masked

    tss = pd.read_csv(seq_demo / DEMO_FILES["tss"], sep="\t")
    assert list(tss.columns) == ["gene_id", "chrom", "position", "strand"]
    assert len(tss) == s.genes == seq_manifest["genes"] and tss.gene_id.is_unique
    assert set(tss.strand) == {"+", "-"}
    lengths = tss.chrom.map(seq_manifest["chromosomes"])
    assert ((tss.position >= 1) & (tss.position <= lengths)).all()
    near_end = (tss.position - 1 < s.flank) | (lengths - tss.position < s.flank)
    assert sorted(tss.gene_id[near_end]) == sorted(seq_manifest["padded_genes"])
    assert len(seq_manifest["padded_genes"]) == s.edge_genes

    expression = pd.read_csv(seq_demo / DEMO_FILES["expression"], sep="\t")
    assert list(expression.gene_id) == list(tss.gene_id) and (expression.expression > 0).all()
    halflife = pd.read_csv(seq_demo / DEMO_FILES["halflife"], sep="\t")
    assert list(halflife.columns) == ["gene_id", *HALF_LIFE_FEATURES]
    assert all(halflife[f].dtype == np.int64 and (halflife[f] >= 0).all() for f in LENGTH_FEATURES)
    gc = halflife[["UTR5GC", "CDSGC", "UTR3GC"]]
    assert ((gc > 0) & (gc < 1)).all().all() and (halflife.ORFEXONDENSITY > 0).all()

    proteins = list(SeqIO.parse(seq_demo / DEMO_FILES["proteins"], "fasta"))
    abundance = pd.read_csv(seq_demo / DEMO_FILES["abundance"], sep="\t")
    assert [r.id for r in proteins] == list(abundance.gene_id)
    assert len(proteins) == seq_manifest["proteins"] and 0.75 < len(proteins) / s.genes < 1
    assert (abundance.abundance > 0).all()
    ends = {str(r.seq).endswith("*") for r in proteins}
    assert ends == {True, False}
    for record in proteins:
        body = str(record.seq).rstrip("*")
        assert s.protein_length[0] <= len(body) <= s.protein_length[1]
        assert set(body) <= set("ACDEFGHIKLMNPQRSTVWY")


def test_motifs_are_planted_on_the_gene_strand(seq_demo, seq_manifest, seq_encoded):
    """Counting each motif forward in the encoded (strand-aware) promoters gives the truth's
    counts, on both strands; planted genes outnumber chance ones."""
    truth = pd.read_csv(seq_demo / "truth.tsv", sep="\t").set_index("gene_id")
    strand = pd.read_csv(seq_demo / DEMO_FILES["tss"], sep="\t").set_index("gene_id").strand
    genes = read_encoded(seq_encoded)
    lo, hi = SMALL.signal_window
    flank = SMALL.flank
    for motif in seq_manifest["motifs"]:
        pattern = re.compile(f"(?={motif['sequence']})")
        counted = {
            g: len(pattern.findall(v["promoter"][flank + lo : flank + hi]))
            for g, v in genes.items()
        }
        assert counted == truth[motif["name"]].to_dict()
        for side in "+-":
            on_side = truth[motif["name"]][strand == side]
            assert (on_side > 0).mean() > 0.5, (motif["name"], side)
        elsewhere = [
            len(pattern.findall(v["promoter"][: flank + lo] + "N" + v["promoter"][flank + hi :]))
            for v in genes.values()
        ]
        assert sum(elsewhere) < 0.1 * sum(counted.values())


def _r2(x, y):
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def test_ceilings_recorded_and_recomputed_from_truth(seq_demo, seq_manifest):
    ceiling = seq_manifest["ceiling"]
    assert set(ceiling) == {"mrna", "protein", "joint"}
    assert all(0 < v < 1 for v in ceiling.values())
    truth = pd.read_csv(seq_demo / "truth.tsv", sep="\t")
    expression = pd.read_csv(seq_demo / DEMO_FILES["expression"], sep="\t")
    table = truth.merge(expression, on="gene_id")
    assert _r2(table.mrna_true, np.log10(table.expression + 0.1)) == pytest.approx(
        ceiling["mrna"], abs=1e-3
    )
    abundance = pd.read_csv(seq_demo / DEMO_FILES["abundance"], sep="\t")
    table = truth.merge(abundance, on="gene_id")
    assert table.protein_seq_signal.notna().all()
    y = np.log10(table.abundance)
    assert _r2(table.protein_seq_signal, y) == pytest.approx(ceiling["protein"], abs=1e-3)
    assert _r2(table.protein_joint_signal, y) == pytest.approx(ceiling["joint"], abs=1e-3)
    assert ceiling["joint"] > ceiling["protein"]


def test_mrna_truth_is_the_planted_function(seq_demo, seq_manifest):
    """mrna_true = offset + motif weights x counts + the half-life term, as documented."""
    truth = pd.read_csv(seq_demo / "truth.tsv", sep="\t")
    halflife = pd.read_csv(seq_demo / DEMO_FILES["halflife"], sep="\t")
    x = halflife[list(HALF_LIFE_FEATURES)].to_numpy(float)
    lengths = [HALF_LIFE_FEATURES.index(f) for f in LENGTH_FEATURES]
    x[:, lengths] = np.log10(x[:, lengths] + 0.1)
    z = (x - x.mean(0)) / x.std(0)
    expected = seq_manifest["mrna_offset"] + SMALL.halflife_weight * z @ np.array(
        [seq_manifest["halflife_weights"][f] for f in HALF_LIFE_FEATURES]
    )
    for motif in seq_manifest["motifs"]:
        expected = expected + motif["weight"] * truth[motif["name"]].to_numpy()
    np.testing.assert_allclose(truth.mrna_true, expected, atol=1e-4)


def test_default_signal_gives_the_intended_ceilings(tmp_path):
    """The default weights and noise (on a short flank, for speed) land in the ranges the
    track is designed around."""
    manifest = write_demo(tmp_path, DemoSettings(flank=3100, n_run=20))
    ceiling = manifest["ceiling"]
    assert 0.7 < ceiling["mrna"] < 0.85, ceiling
    assert 0.3 < ceiling["protein"] < 0.5, ceiling
    assert 0.7 < ceiling["joint"] < 0.85, ceiling


def test_encode_settings_take_the_schema_defaults():
    encode = stage_settings({"val_genes": 200}, "sequence_encode")
    assert encode == {
        "flank": 10000, "max_protein_length": 1000, "val_genes": 200, "test_genes": 1000,
        "split_seed": 0, "xpresso_layout": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"signal_window": (-3000, 12000)}, "signal_window"),
        ({"proximal": 4000}, "proximal"),
        ({"distal_min": 100}, "distal_min"),
        ({"flank": 2000}, "too short for edge genes"),
        ({"genes": 3}, "genes >= 2 x chromosomes"),
    ],
)
def test_settings_that_cannot_hold_the_signal_are_refused(tmp_path, change, problem):
    with pytest.raises(InputError, match=problem):
        write_demo(tmp_path, dataclasses.replace(DemoSettings(), **change))
    assert list(tmp_path.iterdir()) == []
