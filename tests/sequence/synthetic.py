"""Small files in the sequence layout with a known signal, independent of the encode stage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from workflow.sequence.layout import AMINO_ACIDS, SPLITS

LENGTH, PROTEIN = 400, 60
MOTIF = "GATTACAG"


def write_split(path: Path, genes: int, seed: int, proteins: bool = True) -> None:
    """A split file in the layout: the label counts MOTIF anywhere in the promoter (plus a
    half-life term); the protein label is the fraction of K in the protein."""
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, 4, size=(genes, LENGTH))
    counts = rng.integers(0, 4, size=genes)
    motif = np.array(["ACGT".index(c) for c in MOTIF])
    for g, k in enumerate(counts):
        for start in rng.choice(np.arange(0, LENGTH - 8, 8), size=k, replace=False):
            seq[g, start : start + 8] = motif
    promoter = np.zeros((genes, LENGTH, 4), dtype=bool)
    promoter[np.arange(genes)[:, None], np.arange(LENGTH), seq] = True
    promoter[:, :10] = False  # N padding at one end
    data = rng.normal(size=(genes, 8)).astype(np.float32)
    label = (counts - 1.5) / 1.1 + 0.3 * data[:, 1]
    with h5py.File(path, "w") as h5:
        h5.create_dataset("promoter", data=promoter, chunks=(1, LENGTH, 4), compression="lzf")
        h5["data"] = data
        h5["label"] = label.astype(np.float32)
        h5["geneName"] = np.array([f"G{seed}_{g}".encode() for g in range(genes)])
        h5.attrs["flank"] = LENGTH // 2
        if proteins:
            codes = rng.integers(1, 21, size=(genes, PROTEIN)).astype(np.uint8)
            lengths = rng.integers(20, PROTEIN + 1, size=genes)
            codes[np.arange(PROTEIN) >= lengths[:, None]] = 0
            k_code = AMINO_ACIDS.index("K") + 1
            frac = (codes == k_code).sum(1) / lengths
            plabel = ((frac - frac.mean()) / frac.std()).astype(np.float32)
            plabel[:3] = np.nan  # no measured protein
            h5["protein"], h5["protein_length"], h5["protein_label"] = codes, lengths, plabel


def write_encoded(folder: Path, sizes: tuple[int, int, int] = (600, 150, 150)) -> Path:
    """train.h5 / valid.h5 / test.h5 of ``sizes`` genes in ``folder``."""
    for k, (name, genes) in enumerate(zip(SPLITS.values(), sizes, strict=True)):
        write_split(folder / name, genes, seed=k)
    return folder


def encoded_fixture(sizes: tuple[int, int, int] = (600, 150, 150)) -> Callable:
    """A module fixture ``encoded``: :func:`write_encoded` of ``sizes`` genes, once."""

    @pytest.fixture(scope="module", name="encoded")
    def encoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return write_encoded(tmp_path_factory.mktemp("encoded"), sizes)

    return encoded
