"""The sequence track's on-disk layout, shared by the encode stage (writer) and training
(reader): Xpresso's HDF5 split files, extended with protein arrays.

``<dir>/train.h5``, ``valid.h5``, ``test.h5`` (Xpresso's names) each hold, for N genes:

- ``promoter`` bool (N, 2 * flank, 4): one-hot A, C, G, T on the gene's strand, the TSS at
  index ``flank`` (Xpresso: flank 10,000 -> (N, 20000, 4), its TSS at 9,999 on the + strand:
  the encode setting ``xpresso_layout``, workflow/sequence/promoters.py); N and padding are
  all-zero rows.
  Chunked one gene x ``PROMOTER_CHUNK`` bp per chunk, so a training batch decompresses only
  its genes' model windows.
- ``data`` float32 (N, 8): the mRNA half-life features in ``HALF_LIFE_FEATURES`` order,
  log10(x + 0.1) for the lengths and z-scored with the training split's statistics.
- ``label`` float32 (N,): z-scored log10(expression + 0.1) (training-split statistics).
- ``geneName`` bytes (N,).
- ``protein`` uint8 (N, max_protein_length): amino-acid codes (``AMINO_ACIDS``, 1-based; 0 =
  padding), truncated at ``max_protein_length``; ``protein_length`` int32 (N,) before
  truncation; ``protein_label`` float32 (N,): z-scored log10(abundance) and NaN for a gene
  without a measured protein. The published Xpresso files lack these three: such a dataset
  serves the ``mrna`` task only.

File attributes: ``flank``, ``xpresso_layout`` (Xpresso's layout: its files, or encoded so),
``label_mean`` / ``label_std`` (to undo the z-scoring), ``protein_label_mean`` /
``protein_label_std``, ``source`` ("encode" or "xpresso").
"""

from __future__ import annotations

import h5py

SPLITS = {"train": "train.h5", "val": "valid.h5", "test": "test.h5"}
#: Genes per HDF5 write or copy.
BLOCK = 128
PROMOTER_CHUNK = 1000  # bp per HDF5 chunk along the promoter


def promoter_chunks(length: int) -> tuple[int, int, int]:
    return (1, min(length, PROMOTER_CHUNK), 4)


def create_promoter(h5: h5py.File, genes: int, length: int) -> h5py.Dataset:
    """The empty ``promoter`` dataset of a split file, chunked and compressed as above."""
    return h5.create_dataset(
        "promoter",
        (genes, length, 4),
        dtype=bool,
        chunks=promoter_chunks(length),
        compression="lzf",
    )


DNA = "ACGT"
#: 20 standard amino acids, selenocysteine U, pyrrolysine O, unknown X: one-hot width 23.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWYUOX"
HALF_LIFE_FEATURES = (
    "UTR5LEN", "CDSLEN", "INTRONLEN", "UTR3LEN", "UTR5GC", "CDSGC", "UTR3GC", "ORFEXONDENSITY",
)  # fmt: skip
LENGTH_FEATURES = ("UTR5LEN", "CDSLEN", "INTRONLEN", "UTR3LEN")  # log10-transformed
TASKS = ("mrna", "protein", "joint")

#: The input files of a dataset (encode's flags) and their names in a demo dataset's folder.
DEMO_FILES = {
    "genome": "genome.fa",
    "tss": "tss.tsv",
    "expression": "expression.tsv",
    "halflife": "halflife.tsv",
    "proteins": "proteins.fa",
    "abundance": "protein_abundance.tsv",
}
