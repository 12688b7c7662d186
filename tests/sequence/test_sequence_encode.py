"""The encode stage: the layout it writes, the strand convention, N padding, bad input under
both policies, and the import of the published Xpresso files."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.sequence.conftest import ENCODE, SMALL, demo_inputs, read_encoded
from workflow.common.errors import BadSample, InputError
from workflow.sequence.encode import encode_dataset
from workflow.sequence.layout import (
    AMINO_ACIDS,
    DEMO_FILES,
    HALF_LIFE_FEATURES,
    SPLITS,
    promoter_chunks,
)
from workflow.sequence.xpresso import import_xpresso

COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
PROTEIN_KEYS = {"protein", "protein_length", "protein_label"}


def revcomp(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def h5_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.h5")) if folder.exists() else []


def test_files_follow_the_layout(seq_encoded, seq_manifest):
    flank, width = ENCODE["flank"], ENCODE["max_protein_length"]
    sizes = {"train": SMALL.genes - 40, "val": 20, "test": 20}
    for split, name in SPLITS.items():
        with h5py.File(seq_encoded / name) as h5:
            n = sizes[split]
            assert set(h5) == {"promoter", "data", "label", "geneName"} | PROTEIN_KEYS
            promoter = h5["promoter"]
            assert promoter.dtype == bool and promoter.shape == (n, 2 * flank, 4)
            assert promoter.chunks == promoter_chunks(2 * flank) and promoter.compression == "lzf"
            assert (promoter[()].sum(axis=2) <= 1).all()
            assert h5["data"].dtype == np.float32 and h5["data"].shape == (n, 8)
            assert h5["label"].dtype == np.float32 and h5["label"].shape == (n,)
            assert h5["geneName"].dtype.kind == "S" and h5["geneName"].shape == (n,)
            assert h5["protein"].dtype == np.uint8 and h5["protein"].shape == (n, width)
            assert h5["protein_length"].dtype == np.int32
            assert h5["protein_label"].dtype == np.float32
            assert h5.attrs["flank"] == flank and h5.attrs["source"] == "encode"
            for key in ("label_mean", "label_std", "protein_label_mean", "protein_label_std"):
                assert np.isfinite(h5.attrs[key])
            if split == "train":
                assert abs(h5["label"][()].mean()) < 1e-5
                assert h5["label"][()].std() == pytest.approx(1, abs=1e-5)
                assert np.allclose(h5["data"][()].mean(0), 0, atol=1e-5)


def test_values_undo_to_the_input_tables(seq_demo, seq_encoded):
    genes = read_encoded(seq_encoded)
    tss = pd.read_csv(seq_demo / DEMO_FILES["tss"], sep="\t")
    assert sorted(genes) == sorted(tss.gene_id)
    with h5py.File(seq_encoded / SPLITS["train"]) as h5:
        attrs = dict(h5.attrs)
    expression = pd.read_csv(seq_demo / DEMO_FILES["expression"], sep="\t")
    for gene, value in zip(expression.gene_id, expression.expression, strict=True):
        undone = genes[gene]["label"] * attrs["label_std"] + attrs["label_mean"]
        assert undone == pytest.approx(np.log10(value + 0.1), abs=1e-4)

    halflife = pd.read_csv(seq_demo / DEMO_FILES["halflife"], sep="\t").set_index("gene_id")
    x = halflife[list(HALF_LIFE_FEATURES)].to_numpy(float)
    x[:, :4] = np.log10(x[:, :4] + 0.1)
    train = np.array([genes[g]["split"] == "train" for g in halflife.index])
    z = (x - x[train].mean(0)) / x[train].std(0)
    stored = np.stack([genes[g]["data"] for g in halflife.index])
    np.testing.assert_allclose(stored, z, atol=1e-4)

    from Bio import SeqIO

    proteins = {
        r.id: str(r.seq).rstrip("*")
        for r in SeqIO.parse(seq_demo / DEMO_FILES["proteins"], "fasta")
    }
    abundance = pd.read_csv(seq_demo / DEMO_FILES["abundance"], sep="\t").set_index("gene_id")
    for gene, v in genes.items():
        if gene not in proteins:
            assert v["protein_length"] == 0 and not v["protein"].any()
            assert np.isnan(v["protein_label"])
            continue
        n = v["protein_length"]
        assert n == len(proteins[gene]) and not v["protein"][n:].any()
        assert "".join(AMINO_ACIDS[c - 1] for c in v["protein"][:n]) == proteins[gene]
        undone = v["protein_label"] * attrs["protein_label_std"] + attrs["protein_label_mean"]
        assert undone == pytest.approx(np.log10(abundance.abundance[gene]), abs=1e-4)


def test_split_is_seeded(seq_demo, seq_encoded, tmp_path):
    def test_genes(folder):
        with h5py.File(folder / SPLITS["test"]) as h5:
            return set(h5["geneName"][()])

    for seed, same in ((0, True), (1, False)):
        out = tmp_path / str(seed)
        encode_dataset(
            **demo_inputs(seq_demo), out_dir=out, skipped=out / "skipped.tsv",
            settings={**ENCODE, "split_seed": seed}, policy="fail",
        )  # fmt: skip
        assert (test_genes(out) == test_genes(seq_encoded)) is same


def test_padded_genes_have_n_rows_at_the_chromosome_end(seq_manifest, seq_encoded):
    genes = read_encoded(seq_encoded)
    padded = set(seq_manifest["padded_genes"])
    assert len(padded) == SMALL.edge_genes
    for gene, v in genes.items():
        promoter = v["promoter"]
        if gene in padded:
            core = promoter.strip("N")
            assert len(core) < len(promoter) and "N" not in core
            assert promoter.startswith("N") != promoter.endswith("N")
        else:
            assert "N" not in promoter


# A hand-made dataset: every gene's window, label and protein are known.


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    lines = []
    for name, seq in records.items():
        lines.append(f">{name}")
        lines += [seq[i : i + width] for i in range(0, len(seq), width)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


def tiny(seed: int = 0) -> dict:
    """Two chromosomes, ten genes with a TSS at least 30 bp from either end, a protein each."""
    rng = np.random.default_rng(seed)
    genome = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in (("chr1", 400), ("chr2", 300))}
    tss = [
        [f"G{i}", "chr1" if i < 6 else "chr2", 40 + 60 * (i % 6), "+-"[i % 2]] for i in range(10)
    ]
    genes = [row[0] for row in tss]
    return {
        "genome": genome,
        "tss": tss,
        "expression": [[g, round(float(rng.uniform(0, 100)), 3)] for g in genes],
        "halflife": [
            [g, *rng.integers(10, 2000, 4), *rng.uniform(0.3, 0.7, 4).round(3)] for g in genes
        ],
        "proteins": {g: "".join(rng.choice(list(AMINO_ACIDS[:20]), 40)) for g in genes},
        "abundance": [[g, round(float(rng.uniform(1, 1e4)), 2)] for g in genes],
    }  # fmt: skip


def write_tiny(root: Path, data: dict) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {
        "genome": write_fasta(root / "genome.fa", data["genome"]),
        "tss": write_tsv(root / "tss.tsv", ["gene_id", "chrom", "position", "strand"], data["tss"]),
        "expression": write_tsv(root / "expr.tsv", ["gene_id", "expression"], data["expression"]),
        "halflife": write_tsv(
            root / "halflife.tsv", ["gene_id", *HALF_LIFE_FEATURES], data["halflife"]
        ),
        "proteins": write_fasta(root / "proteins.fa", data["proteins"]),
        "abundance": write_tsv(root / "abundance.tsv", ["gene_id", "abundance"], data["abundance"]),
    }


TINY = {"flank": 30, "max_protein_length": 30, "val_genes": 2, "test_genes": 2, "split_seed": 0}


def encode(
    paths: dict, out: Path, policy: str = "fail", abundance_scale: str = "linear", **settings
) -> dict[str, int]:
    return encode_dataset(
        **paths, out_dir=out, skipped=out / "skipped.tsv", settings={**TINY, **settings},
        policy=policy, abundance_scale=abundance_scale,
    )  # fmt: skip


def test_strand_convention_and_padding_on_a_known_genome(tmp_path, caplog):
    """+ strand: genome[p - F, p + F); - strand: revcomp(genome[p - F + 1, p + F + 1)); the
    TSS base at index F either way; N beyond a chromosome end (p = position - 1)."""
    data = tiny()
    chrom = data["genome"]["chr1"]
    f = TINY["flank"]
    data["tss"] = [
        ["plus", "chr1", 101, "+"], ["minus", "chr1", 101, "-"],
        ["start_plus", "chr1", 3, "+"], ["start_minus", "chr1", 3, "-"],
        ["end_plus", "chr1", 399, "+"], ["end_minus", "chr1", 399, "-"],
        ["last_base", "chr1", 400, "-"],
    ]  # fmt: skip
    genes = [row[0] for row in data["tss"]]
    data["expression"] = [[g, 1.0 + k] for k, g in enumerate(genes)]
    data["halflife"] = [[g, *row[1:]] for g, row in zip(genes, data["halflife"], strict=False)]
    data["proteins"] = {g: "MKR" for g in genes}
    data["abundance"] = [[g, 5.0 + k] for k, g in enumerate(genes)]
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="lsai.sequence.encode"):
        counts = encode(write_tiny(tmp_path, data), out, val_genes=1, test_genes=1)
    assert counts == {"train": 5, "val": 1, "test": 1}
    assert "5 N-padded at a chromosome end" in caplog.text
    got = {g: v["promoter"] for g, v in read_encoded(out).items()}
    p = 100
    expected = {
        "plus": chrom[p - f : p + f],
        "minus": revcomp(chrom[p - f + 1 : p + f + 1]),
        "start_plus": "N" * (f - 2) + chrom[: 2 + f],
        "start_minus": revcomp(chrom[: 2 + f + 1]) + "N" * (f - 3),
        "end_plus": chrom[398 - f :] + "N" * (f - 2),
        "end_minus": "N" * (f - 1) + revcomp(chrom[398 - f + 1 :]),
        "last_base": "N" * f + revcomp(chrom[399 - f + 1 :]),
    }
    assert got == expected
    assert got["plus"][f] == chrom[p] and got["minus"][f] == revcomp(chrom[p])
    assert got["end_plus"][f] == chrom[398] and got["last_base"][f] == revcomp(chrom[399])


def test_read_only_genome_folder_indexes_elsewhere(tmp_path, monkeypatch):
    import workflow.sequence.promoters as module

    paths = write_tiny(tmp_path / "ref", tiny())
    monkeypatch.setattr(module.os, "access", lambda *_: False)
    assert encode(paths, tmp_path / "out") == {"train": 6, "val": 2, "test": 2}
    assert not Path(f"{paths['genome']}.fai").exists()


def mutate_row(table: list[list], gene: str, column: int, value) -> None:
    next(row for row in table if row[0] == gene)[column] = value


def drop(table: list[list], gene: str) -> None:
    table[:] = [row for row in table if row[0] != gene]


def non_acgtn(data: dict) -> None:
    chrom = data["genome"]["chr1"]  # G0: chr1:40 on + ; the window holds chr1:10-69
    data["genome"]["chr1"] = chrom[:44] + "R" + chrom[45:]


BAD_GENES = {
    "non-ACGTN character": (
        non_acgtn, "genome", "G0", "gene G0: non-ACGTN character 'R' at chr1:45"
    ),
    "TSS outside the chromosome": (
        lambda d: mutate_row(d["tss"], "G1", 2, 401), "tss", "G1",
        "line 3: gene G1: TSS chr1:401 outside the chromosome (1-400)",
    ),
    "unknown chromosome": (
        lambda d: mutate_row(d["tss"], "G2", 1, "chrZ"), "tss", "G2", "unknown chromosome 'chrZ'"
    ),
    "missing from the expression table": (
        lambda d: drop(d["expression"], "G3"), "expression", "G3", "gene G3 is not in the table"
    ),
    "empty expression value": (
        lambda d: mutate_row(d["expression"], "G3", 1, "NA"), "expression", "G3",
        "line 5: gene G3: no expression value",
    ),
    "missing from the half-life table": (
        lambda d: drop(d["halflife"], "G4"), "halflife", "G4", "gene G4 is not in the table"
    ),
}  # fmt: skip
BAD_PROTEINS = {
    "stop codon inside": ("MKK*LLR", "protein G6: stop codon '*' inside, at residue 4 of 7"),
    "not an amino acid": ("MKB1L*", "protein G6: 'B' at residue 3 is no amino acid"),
    "empty protein": ("*", "protein G6 is empty"),
}


def fails_then_skips(inputs: dict, tmp_path: Path, key: str, gene: str, problem: str) -> dict:
    """One damaged gene: under ``fail`` a BadSample naming ``inputs[key]`` and no file; under
    ``skip`` the other 9 genes encoded and the gene listed in skipped.tsv. The encoded genes."""
    with pytest.raises(BadSample) as err:
        encode(inputs, tmp_path / "fail", "fail")
    assert err.value.path == str(inputs[key]) and problem in err.value.problem, err.value
    assert h5_files(tmp_path / "fail") == []

    out = tmp_path / "skip"
    assert encode(inputs, out, "skip") == {"train": 5, "val": 2, "test": 2}
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t")
    assert list(skipped.item) == [gene] and problem in skipped.problem[0]
    assert skipped.path[0] == str(inputs[key])
    genes = read_encoded(out)
    assert gene not in genes and len(genes) == 9
    return genes


@pytest.mark.parametrize("kind", sorted(BAD_GENES))
def test_bad_gene_fails_or_is_skipped(tmp_path, kind):
    damage, key, gene, problem = BAD_GENES[kind]
    data = tiny()
    damage(data)
    fails_then_skips(write_tiny(tmp_path / "in", data), tmp_path, key, gene, problem)


@pytest.mark.parametrize("kind", sorted(BAD_PROTEINS))
def test_bad_protein_loses_only_the_protein(tmp_path, kind):
    sequence, problem = BAD_PROTEINS[kind]
    data = tiny()
    data["proteins"]["G6"] = sequence
    paths = write_tiny(tmp_path / "in", data)
    with pytest.raises(BadSample, match=problem.replace("*", r"\*")) as err:
        encode(paths, tmp_path / "fail", "fail")
    assert err.value.path == str(paths["proteins"]) and h5_files(tmp_path / "fail") == []

    out = tmp_path / "skip"
    assert sum(encode(paths, out, "skip").values()) == 10
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t")
    assert list(skipped.item) == ["G6 protein"] and problem in skipped.problem[0]
    genes = read_encoded(out)
    assert genes["G6"]["protein_length"] == 0 and np.isnan(genes["G6"]["protein_label"])
    assert np.isfinite(genes["G5"]["protein_label"]) and np.isfinite(genes["G6"]["label"])


def test_terminal_stop_and_long_proteins(tmp_path):
    data = tiny()
    data["proteins"]["G1"] = "M" * 50 + "*"
    encode(write_tiny(tmp_path, data), tmp_path / "out")
    genes = read_encoded(tmp_path / "out")
    assert genes["G1"]["protein_length"] == 50 and (genes["G1"]["protein"] == 11).all()


def _duplicate(table: str, gene: str):
    return lambda d: d[table].append(list(next(r for r in d[table] if r[0] == gene)))


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


BAD_INPUTS = {
    "duplicate TSS id": (
        _duplicate("tss", "G2"), None, "tss", "gene G2 listed twice (lines 4 and 12)"
    ),
    "duplicate expression id": (
        _duplicate("expression", "G5"), None, "expression", "gene G5 listed twice (lines 7 and 12)"
    ),
    "duplicate half-life id": (
        _duplicate("halflife", "G0"), None, "halflife", "gene G0 listed twice (lines 2 and 12)"
    ),
    "duplicate protein record": (
        lambda d: None, lambda p: p["proteins"].write_text(
            p["proteins"].read_text() + ">G3 again\nMKR\n"
        ), "proteins", "protein G3 twice (records 4 and 11)",
    ),
    "truncated genome": (
        None, lambda p: _cut(p["genome"], 0.6), "genome", "ends mid-line: truncated"
    ),
    "genome not FASTA": (
        None, lambda p: p["genome"].write_text("chrom\tsequence\nchr1\tACGT\n"), "genome",
        "not a readable genome FASTA: Unexpected text before the first sequence",
    ),
    "genome with uneven lines": (
        None, lambda p: p["genome"].write_text(">chr1\nACGTACGT\nACG\nACGTACGT\n"), "genome",
        "Line length of fasta file is not consistent",
    ),
    "missing genome": (None, lambda p: p["genome"].unlink(), "genome", "genome FASTA not found"),
    "non-numeric expression": (
        lambda d: mutate_row(d["expression"], "G2", 1, "high"), None, "expression",
        "line 4: expression 'high' is not a number",
    ),
    "negative expression": (
        lambda d: mutate_row(d["expression"], "G2", 1, -3), None, "expression",
        "line 4: expression '-3' is negative",
    ),
    "non-integer position": (
        lambda d: mutate_row(d["tss"], "G7", 2, "12.5"), None, "tss",
        "line 9: position '12.5' is not an integer",
    ),
    "bad strand": (
        lambda d: mutate_row(d["tss"], "G7", 3, "."), None, "tss",
        "line 9: strand '.' is not + or -",
    ),
    "missing column": (
        None, lambda p: p["halflife"].write_text(
            p["halflife"].read_text().replace("CDSLEN", "CDS_LEN", 1)
        ), "halflife", "missing column(s) ['CDSLEN']",
    ),
    "short line": (
        lambda d: d["abundance"].append(["G9"]), None, "abundance",
        "line 12: 1 tab-separated fields, the header has 2",
    ),
    "protein FASTA without records": (
        None, lambda p: p["proteins"].write_text("MKR\n"), "proteins", "not a protein FASTA"
    ),
    "proteins without abundance": (
        None, lambda p: p.pop("abundance"), "proteins", "give both"
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_bad_input_stops_under_both_policies(tmp_path, kind, policy):
    damage_data, damage_files, key, problem = BAD_INPUTS[kind]
    data = tiny()
    if damage_data:
        damage_data(data)
    paths = write_tiny(tmp_path / "in", data)
    path = paths[key]
    if damage_files:
        damage_files(paths)
    paths.setdefault("abundance", None)
    with pytest.raises(InputError) as err:
        encode(paths, tmp_path / "out", policy)
    assert not isinstance(err.value, BadSample)
    assert err.value.path == str(path) and problem in err.value.problem, err.value
    assert h5_files(tmp_path / "out") == []


def test_no_gene_left_and_too_few_genes(tmp_path):
    data = tiny()
    data["expression"] = [[g, "NA"] for g, _ in data["expression"]]
    paths = write_tiny(tmp_path, data)
    with pytest.raises(InputError, match=r"no gene left \(10 skipped\)") as err:
        encode(paths, tmp_path / "out", "skip")
    assert err.value.path == str(paths["tss"])
    paths = write_tiny(tmp_path, tiny())
    with pytest.raises(InputError, match="10 usable genes: too few for 5 validation"):
        encode(paths, tmp_path / "out", "skip", val_genes=5, test_genes=5)
    assert h5_files(tmp_path / "out") == []


def test_mrna_only_without_halflife_and_proteins(tmp_path):
    paths = write_tiny(tmp_path, tiny())
    paths.update(halflife=None, proteins=None, abundance=None)
    encode(paths, tmp_path / "out")
    with h5py.File(tmp_path / "out" / SPLITS["test"]) as h5:
        assert not PROTEIN_KEYS & set(h5) and not h5["data"][()].any()


# The published Xpresso files.


def write_xpresso(folder: Path, sizes=(6, 3, 3), length: int = 20000, dtype=bool) -> dict:
    """Xpresso's split files: promoter (N, length, 4) one-hot, data (N, 8), label, geneName."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for (split, name), n in zip(SPLITS.items(), sizes, strict=True):
        bases = rng.integers(0, 5, size=(n, length))
        promoter = np.eye(5, 4, dtype=dtype)[bases]
        values = {
            "promoter": promoter,
            "data": rng.normal(size=(n, 8)),
            "label": rng.normal(size=n),
            "geneName": np.array([f"ENSG{split}{i:05d}".encode() for i in range(n)]),
        }
        with h5py.File(folder / name, "w") as h5:
            for key, value in values.items():
                h5[key] = value
        arrays[split] = values
    return arrays


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_import_xpresso_rewrites_the_layout(tmp_path, dtype):
    arrays = write_xpresso(tmp_path / "xpresso", dtype=dtype)
    out = tmp_path / "out"
    assert import_xpresso(tmp_path / "xpresso", out) == {"train": 6, "val": 3, "test": 3}
    for split, name in SPLITS.items():
        with h5py.File(out / name) as h5:
            assert set(h5) == {"promoter", "data", "label", "geneName"}
            assert h5["promoter"].dtype == bool and h5["promoter"].chunks == (1, 1000, 4)
            np.testing.assert_array_equal(h5["promoter"][()], arrays[split]["promoter"] > 0)
            np.testing.assert_allclose(h5["data"][()], arrays[split]["data"], rtol=1e-6)
            np.testing.assert_allclose(h5["label"][()], arrays[split]["label"], rtol=1e-6)
            assert list(h5["geneName"][()]) == list(arrays[split]["geneName"])
            assert h5["data"].dtype == h5["label"].dtype == np.float32
            assert dict(h5.attrs) == {
                "flank": 10000, "label_mean": 0.0, "label_std": 1.0, "source": "xpresso",
                "xpresso_layout": True,
            }  # fmt: skip


def _rewrite(path: Path, key: str, value) -> None:
    with h5py.File(path, "a") as h5:
        del h5[key]
        if value is not None:
            h5[key] = value


BROKEN_XPRESSO = {
    "missing label": (lambda p: _rewrite(p, "label", None), "lacks dataset(s) ['label']"),
    "five channels": (
        lambda p: _rewrite(p, "promoter", np.zeros((3, 20000, 5), bool)),
        "promoter shape (3, 20000, 5), expected (N, 20000, 4)",
    ),
    "float promoter": (
        lambda p: _rewrite(p, "promoter", np.zeros((3, 20000, 4), np.float32)), "promoter dtype"
    ),
    "short data": (lambda p: _rewrite(p, "data", np.zeros((3, 7))), "data (3, 7)"),
    "truncated": (lambda p: _cut(p, 0.5), "not a readable HDF5 file"),
    "not HDF5": (lambda p: p.write_text("promoter,label\n"), "not a readable HDF5 file"),
    "missing": (lambda p: p.unlink(), "Xpresso split file not found"),
    "not one-hot": (
        lambda p: _rewrite(p, "promoter", np.full((3, 20000, 4), 2, np.uint8)),
        "values other than 0 and 1",
    ),
    "a train gene in val": (
        lambda p: _rewrite(p, "geneName", np.array([b"ENSGval00000", b"ENSGtrain00004", b"x"])),
        "gene 'ENSGtrain00004' is also in train.h5",
    ),
    "a gene twice": (
        lambda p: _rewrite(p, "geneName", np.array([b"ENSGval00000", b"x", b"x"])),
        "gene 'x' is also in valid.h5",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BROKEN_XPRESSO))
def test_broken_xpresso_files_are_named(tmp_path, kind):
    damage, problem = BROKEN_XPRESSO[kind]
    write_xpresso(tmp_path / "xpresso")
    path = tmp_path / "xpresso" / SPLITS["val"]
    damage(path)
    with pytest.raises(InputError) as err:
        import_xpresso(tmp_path / "xpresso", tmp_path / "out")
    assert err.value.path == str(path) and problem in err.value.problem, err.value
    assert h5_files(tmp_path / "out") == []


def test_log_ratio_abundances_keep_negative_and_zero_values(tmp_path):
    """A CPTAC-style proteome: log2 ratios to a reference, negative and 0 as common as
    positive. They are labels as they are (z-scored), only NA loses its label; on the linear
    scale the same table stops the stage at its first negative value."""
    data = tiny()
    ratios = [-2.5, -0.75, 0.0, 0.0, 1.25, 3.0, -1.0, 0.5, "NA", 2.0]
    data["abundance"] = [[g, r] for (g, _), r in zip(data["abundance"], ratios, strict=True)]
    paths = write_tiny(tmp_path / "in", data)
    out = tmp_path / "out"
    encode(paths, out, abundance_scale="log_ratio")
    genes = read_encoded(out)
    with h5py.File(out / "train.h5") as h5:
        attrs = dict(h5.attrs)
    assert attrs["abundance_scale"] == "log_ratio"
    by_gene = dict(zip([row[0] for row in data["abundance"]], ratios, strict=True))
    for gene, values in genes.items():
        ratio = by_gene[gene]
        if ratio == "NA":
            assert np.isnan(values["protein_label"]), gene
            continue
        undone = values["protein_label"] * attrs["protein_label_std"] + attrs["protein_label_mean"]
        assert undone == pytest.approx(ratio, abs=1e-5), gene  # no log taken
    kept = [by_gene[g] for g, v in genes.items() if v["split"] == "train" and by_gene[g] != "NA"]
    assert attrs["protein_label_mean"] == pytest.approx(np.mean(kept), abs=1e-6)
    with pytest.raises(InputError) as err:
        encode(paths, tmp_path / "linear")
    assert err.value.path == str(paths["abundance"]) and "is negative" in err.value.problem


def test_the_dataset_s_abundance_scale_reaches_the_encode_stage():
    from workflow.sequence.sources import encode_args

    config = {"datasets": {
        "cptac": {"genome": "g.fa", "tss": "t.tsv", "expression": "e.tsv", "proteins": "p.fa",
                  "abundance": "a.tsv", "abundance_scale": "log_ratio"},
        "levels": {"genome": "g.fa", "tss": "t.tsv", "expression": "e.tsv"},
    }}  # fmt: skip
    assert encode_args(config, "cptac")[-2:] == ["--abundance-scale", "log_ratio"]
    assert "--abundance-scale" not in encode_args(config, "levels")
