"""Sequence fixtures: one small demo dataset and its encoding, built once per session."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import demo_fixtures
from workflow.sequence.demo import DemoSettings, write_demo
from workflow.sequence.layout import DEMO_FILES, DNA, SPLITS

# 120 genes with a 1 kb flank: the signal sits in TSS -600 .. +400, two genes run past a
# chromosome end. A fraction of a second to write and to encode.
SMALL = DemoSettings(
    genes=120,
    chromosomes=3,
    flank=1000,
    signal_window=(-600, 400),
    proximal=150,
    distal_min=250,
    n_run=100,
    seed=7,
)
ENCODE = {
    "flank": 1000, "max_protein_length": 1000, "val_genes": 20, "test_genes": 20, "split_seed": 0,
}  # fmt: skip


seq_demo, seq_manifest = demo_fixtures("seq", write_demo, SMALL)


def demo_inputs(root: Path) -> dict[str, Path]:
    """encode_dataset's input paths of a demo folder, by argument name."""
    return {key: root / name for key, name in DEMO_FILES.items()}


@pytest.fixture(scope="session")
def seq_encoded(seq_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workflow.sequence.encode import encode_dataset

    out = tmp_path_factory.mktemp("sequence_encoded")
    encode_dataset(
        **demo_inputs(seq_demo), out_dir=out, skipped=out / "skipped.tsv", settings=ENCODE,
        policy="fail",
    )  # fmt: skip
    return out


def decode(promoter: np.ndarray) -> str:
    """One-hot rows -> bases (N for an all-zero row)."""
    codes = np.where(promoter.any(axis=1), promoter.argmax(axis=1), 4)
    return "".join((DNA + "N")[c] for c in codes)


def read_encoded(folder: Path) -> dict[str, dict]:
    """gene -> {split, promoter (as bases), data, label, protein..., flank} of every split."""
    genes: dict[str, dict] = {}
    for split, name in SPLITS.items():
        with h5py.File(folder / name) as h5:
            arrays = {k: h5[k][()] for k in h5 if k != "promoter"}
            for i, gene in enumerate(arrays["geneName"]):
                genes[gene.decode()] = {
                    "split": split,
                    "promoter": decode(h5["promoter"][i]),
                    **{k: v[i] for k, v in arrays.items() if k != "geneName"},
                }
    return genes
