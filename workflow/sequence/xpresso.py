"""The published Xpresso HDF5 files (``promoter``, ``data``, ``label``, ``geneName``),
checked and rewritten in the layout of workflow.sequence.layout.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from workflow.common.atomic import atomic_path
from workflow.common.errors import InputError
from workflow.sequence.layout import (
    BLOCK,
    HALF_LIFE_FEATURES,
    SPLITS,
    create_promoter,
)

log = logging.getLogger("lsai.sequence.xpresso")

XPRESSO_KEYS = ("promoter", "data", "label", "geneName")


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
                {
                    "flank": length // 2,
                    "label_mean": 0.0,
                    "label_std": 1.0,
                    "source": "xpresso",
                    "xpresso_layout": True,
                }
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
