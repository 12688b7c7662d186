"""Paths and names that come from inside a dataset's files (a CSV's ``path`` column, an
annotation's ``file_name``, a transforms.json ``file_path``, a slide id that names an output
file): they must stay inside the dataset, and a name must stay a name. Checked lexically, so
a dataset of symlinks into shared storage still reads; ``../`` and absolute paths do not."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from workflow.common.errors import InputError


def leaves(relative: str) -> bool:
    """Whether a path named inside a dataset is empty, absolute or climbs out with ``..``."""
    text = str(relative).replace("\\", "/")
    if not text or text.startswith("/") or "\0" in text:
        return True
    parts = PurePosixPath(os.path.normpath(text)).parts
    return bool(parts) and parts[0] == ".."


def inside(root: str | os.PathLike[str], relative: str, where: str | os.PathLike[str]) -> Path:
    """``root / relative``, or an InputError at ``where`` (the file that named it) when
    ``relative`` :func:`leaves` the dataset."""
    if leaves(relative):
        raise InputError(where, f"path {relative!r} leaves the dataset folder {root}")
    return Path(root) / str(relative).replace("\\", "/")


def plain_name(name: str, where: str | os.PathLike[str], what: str = "name") -> str:
    """A name that becomes part of an output file's name: no separator, not ``.``/``..``,
    not hidden, no control character."""
    bad = (
        not name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or name.startswith(".")
        or any(ord(c) < 32 for c in name)
    )
    if bad:
        raise InputError(where, f"{what} {name!r} cannot name a file (a path or a hidden name)")
    return name
