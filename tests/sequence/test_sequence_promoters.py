"""The encode stage's third source: promoters as a per-gene FASTA (Xpresso's convention, read
with Biopython) in place of genome + TSS table. Same arrays as the genome route, bad records
under both policies, broken files, the CLI and the config."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT
from tests.sequence.conftest import ENCODE, demo_inputs, read_encoded
from tests.sequence.test_sequence_encode import (
    TINY,
    encode,
    fails_then_skips,
    h5_files,
    revcomp,
    tiny,
    write_fasta,
    write_tiny,
)
from workflow.common.config import ConfigError, validate_config
from workflow.common.errors import BadSample, InputError
from workflow.common.experiments import enabled_datasets
from workflow.sequence.encode import encode_dataset
from workflow.sequence.layout import DNA, SPLITS
from workflow.sequence.promoters import PromoterReader, open_genome
from workflow.sequence.sources import encode_args
from workflow.sequence.tables import read_tss

TABLES = ("expression", "halflife", "proteins", "abundance")


def genome_records(genome: Path, tss: Path, flank: int) -> dict[str, str]:
    """Each gene's window as the genome route reads it, as letters (N for padding)."""
    with ExitStack() as stack:
        reader = PromoterReader(open_genome(genome, stack), genome, flank)
        return {
            gene.gene_id: "".join((DNA + "N")[c] for c in reader.window(gene)[0])
            for gene in read_tss(tss)
        }


def fasta_inputs(paths: dict[str, Path], promoters: Path) -> dict[str, Path | None]:
    """encode_dataset's arguments with the promoter FASTA in place of genome + TSS table."""
    tables = {k: paths.get(k) for k in TABLES}
    return {"genome": None, "tss": None, **tables, "promoters": promoters}


def assert_same_encoding(a: Path, b: Path) -> None:
    """Every split file holds the same genes in the same order with the same arrays."""
    for name in SPLITS.values():
        with h5py.File(a / name) as x, h5py.File(b / name) as y:
            assert set(x) == set(y)
            for key in x:
                np.testing.assert_array_equal(x[key][()], y[key][()], err_msg=f"{name} {key}")
            assert dict(x.attrs) == dict(y.attrs)


def test_same_arrays_as_the_genome_route_on_the_demo(seq_demo, seq_encoded, tmp_path):
    """Records cut from the demo genome (both strands, N-padded genes at chromosome ends,
    some soft-masked) encode to the genome route's promoter, data, label and geneName."""
    inputs = demo_inputs(seq_demo)
    tss = pd.read_csv(inputs["tss"], sep="\t")
    assert {"+", "-"} <= set(tss.strand)  # both orientations are covered
    records = genome_records(inputs["genome"], inputs["tss"], ENCODE["flank"])
    assert any(seq.startswith("N") or seq.endswith("N") for seq in records.values())
    records = {g: seq.lower() if k % 3 == 0 else seq for k, (g, seq) in enumerate(records.items())}
    promoters = write_fasta(tmp_path / "promoters.fa", records, width=80)
    out = tmp_path / "out"
    counts = encode_dataset(
        **fasta_inputs(inputs, promoters), out_dir=out, skipped=out / "skipped.tsv",
        settings=ENCODE, policy="fail",
    )  # fmt: skip
    assert counts == {"train": 80, "val": 20, "test": 20}
    assert_same_encoding(seq_encoded, out)
    by_route = read_encoded(seq_encoded), read_encoded(out)
    assert sorted(by_route[0]) == sorted(by_route[1]) == sorted(tss.gene_id)
    for gene, v in by_route[0].items():
        assert by_route[1][gene]["promoter"] == v["promoter"] == records[gene].upper()


def test_hand_cut_records_match_the_genome_route(tmp_path, caplog):
    """Records cut by hand from a known genome (revcomp on -) give the genome route's arrays;
    no gene of a FASTA is N-padded."""
    data = tiny()
    paths = write_tiny(tmp_path / "in", data)
    f = TINY["flank"]
    records = {}
    for gene, chrom, position, strand in data["tss"]:
        p, seq = position - 1, data["genome"][chrom]
        records[gene] = seq[p - f : p + f] if strand == "+" else revcomp(seq[p - f + 1 : p + f + 1])
    assert {row[3] for row in data["tss"]} == {"+", "-"}
    promoters = write_fasta(tmp_path / "in" / "promoters.fa", records)
    encode(paths, tmp_path / "genome")
    caplog.set_level("INFO", logger="lsai.sequence.encode")
    encode(fasta_inputs(paths, promoters), tmp_path / "fasta")
    assert "0 N-padded" in caplog.text
    assert_same_encoding(tmp_path / "genome", tmp_path / "fasta")
    gene, chrom, position, strand = data["tss"][1]
    assert strand == "-"
    promoter = read_encoded(tmp_path / "fasta")[gene]["promoter"]
    assert promoter == records[gene] and promoter[f] == revcomp(data["genome"][chrom][position - 1])


@pytest.fixture
def tiny_fasta() -> tuple[dict, dict[str, str]]:
    """The tables of ``tiny`` and ten promoter records G0..G9 of 2 x 30 bp, to damage before
    ``write_fasta_case`` writes them."""
    rng = np.random.default_rng(3)
    records = {f"G{i}": "".join(rng.choice(list("ACGT"), 2 * TINY["flank"])) for i in range(10)}
    return tiny(), records


def write_fasta_case(root: Path, data: dict, records: dict[str, str]) -> dict[str, Path | None]:
    paths = write_tiny(root, data)
    return fasta_inputs(paths, write_fasta(root / "promoters.fa", records))


Damage = Callable[[dict, dict[str, str]], None]


def _set(gene: str, seq: Callable[[str], str]) -> Damage:
    def damage(data: dict, records: dict[str, str]) -> None:
        records[gene] = seq(records[gene])

    return damage


def _drop_expression(gene: str) -> Damage:
    def damage(data: dict, records: dict[str, str]) -> None:
        data["expression"] = [row for row in data["expression"] if row[0] != gene]

    return damage


BAD_RECORDS = {
    "wrong length": (
        _set("G2", lambda s: s[:-1]), "promoters", "G2",
        "gene G2 (record 3): 59 bp, expected 2 x flank = 60",
    ),
    "too long": (
        _set("G7", lambda s: s + "A"), "promoters", "G7", "gene G7 (record 8): 61 bp, expected",
    ),
    "non-ACGTN character": (
        _set("G4", lambda s: s[:44] + "R" + s[45:]), "promoters", "G4",
        "gene G4 (record 5): non-ACGTN character 'R' at position 45",
    ),
    "gap character": (
        _set("G8", lambda s: "-" + s[1:]), "promoters", "G8",
        "gene G8 (record 9): non-ACGTN character '-' at position 1",
    ),
    "non-ASCII character": (
        _set("G5", lambda s: s[:6] + "é" + s[7:]), "promoters", "G5",
        "gene G5 (record 6): non-ACGTN byte 0xc3 at position 7",
    ),
    "missing from the expression table": (
        _drop_expression("G3"), "expression", "G3", "gene G3 is not in the table"
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_bad_record_fails_or_is_skipped(tiny_fasta, tmp_path, kind):
    damage, key, gene, problem = BAD_RECORDS[kind]
    data, records = tiny_fasta
    damage(data, records)
    inputs = write_fasta_case(tmp_path / "in", data, records)
    genes = fails_then_skips(inputs, tmp_path, key, gene, problem)
    assert genes["G0"]["promoter"] == records["G0"]


def test_soft_masked_and_n_bases_are_kept(tiny_fasta, tmp_path):
    data, records = tiny_fasta
    records["G1"] = records["G1"][:10].lower() + "N" * 5 + records["G1"][15:]
    encode(write_fasta_case(tmp_path / "in", data, records), tmp_path / "out")
    promoter = read_encoded(tmp_path / "out")["G1"]["promoter"]
    assert promoter == records["G1"].upper() and promoter[10:15] == "NNNNN"


def _append(text: str) -> Callable[[Path], None]:
    return lambda p: p.write_text(p.read_text() + text)


BAD_FILES = {
    "duplicate id": (
        _append(">G3 again\n" + "A" * 60 + "\n"), "duplicate id G3 (records 4 and 11)"
    ),
    "missing": (lambda p: p.unlink(), "promoter FASTA not found"),
    "empty": (lambda p: p.write_text(""), "empty promoter FASTA"),
    "blank lines only": (lambda p: p.write_text("\n\n"), "empty promoter FASTA"),
    "a table": (
        lambda p: p.write_text("gene_id\tsequence\nG1\tACGT\n"),
        "not a FASTA: it starts with 'gene_id\\tsequence'",
    ),
    "text before the first record": (
        lambda p: p.write_text("promoters\n" + p.read_text()), "not a FASTA: it starts with"
    ),
    "record without id": (_append(">\n" + "A" * 60 + "\n"), "a record has no id"),
    "gzip, not BGZF": (
        lambda p: p.write_bytes(gzip.compress(p.read_bytes())), "not a readable FASTA: Gzipped"
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_broken_promoter_file_stops_under_both_policies(tiny_fasta, tmp_path, kind, policy):
    damage, problem = BAD_FILES[kind]
    inputs = write_fasta_case(tmp_path / "in", *tiny_fasta)
    damage(inputs["promoters"])
    with pytest.raises(InputError) as err:
        encode(inputs, tmp_path / "out", policy)
    assert not isinstance(err.value, BadSample)
    assert err.value.path == str(inputs["promoters"]) and problem in err.value.problem, err.value
    assert h5_files(tmp_path / "out") == [] and not (tmp_path / "out" / "skipped.tsv").exists()


def test_one_promoter_source_exactly(tiny_fasta, tmp_path):
    inputs = write_fasta_case(tmp_path / "in", *tiny_fasta)
    genome_paths = write_tiny(tmp_path / "in", tiny_fasta[0])
    with pytest.raises(InputError, match="not both") as err:
        encode({**inputs, "genome": genome_paths["genome"]}, tmp_path / "out")
    assert err.value.path == str(inputs["promoters"])
    with pytest.raises(InputError, match="needs genome \\+ tss .* or a promoter FASTA"):
        encode({**inputs, "promoters": None}, tmp_path / "out")
    with pytest.raises(InputError, match="needs genome \\+ tss") as err:
        encode({**inputs, "promoters": None, "genome": genome_paths["genome"]}, tmp_path / "out")
    assert err.value.path == str(genome_paths["genome"])
    assert h5_files(tmp_path / "out") == []


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/sequence.py"), "encode", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_cli_encodes_promoters_and_names_a_missing_file(tiny_fasta, tmp_path):
    inputs = write_fasta_case(tmp_path / "in", *tiny_fasta)
    out = tmp_path / "out"
    settings = json.dumps({"flank": 30, "val_genes": 2, "test_genes": 2})
    common = ["--expression", str(inputs["expression"]), "--out", str(out)]
    common += ["--skipped", str(out / "skipped.tsv"), "--settings", settings]
    result = script("--promoters", str(inputs["promoters"]), *common)
    assert result.returncode == 0, result.stderr[-2000:]
    assert h5_files(out) == sorted(SPLITS.values())
    assert len(read_encoded(out)) == 10

    missing = tmp_path / "nowhere.fa"
    result = script("--promoters", str(missing), *common)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {missing}: promoter FASTA not found"], result.stderr[-1500:]

    result = script("--promoters", str(inputs["promoters"]), *common[2:])
    assert result.returncode == 2 and "needs --expression" in result.stderr


def test_config_accepts_a_promoter_dataset():
    dataset = {"promoters": "/data/promoters.fa", "expression": "/data/expression.tsv"}
    track = {"datasets": {"fa": dataset, "demo": {"demo": True}}}
    assert enabled_datasets("sequence", track) == ["fa", "demo"]
    assert encode_args(track, "fa") == [
        "--promoters", "/data/promoters.fa", "--expression", "/data/expression.tsv"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="`promoters` and `expression`"):
        enabled_datasets("sequence", {"datasets": {"fa": {"promoters": "/data/promoters.fa"}}})

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["sequence"]["datasets"]["fa"] = dict(dataset)
    validated = validate_config(config, ROOT / "config/schema/config.yaml")
    assert validated["sequence"]["datasets"]["fa"]["promoters"] == dataset["promoters"]
    config["sequence"]["datasets"]["fa"]["promoter"] = "/data/promoters.fa"  # a misspelt key
    with pytest.raises(ConfigError, match=r"unknown key sequence\.datasets\.fa\.promoter\b"):
        validate_config(config, ROOT / "config/schema/config.yaml")
