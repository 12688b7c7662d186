"""Where a sequence dataset's inputs come from, for the rules: the demo's files, the files the
config names (a genome + TSS table or a per-gene promoter FASTA, with the tables), or a folder
of the published Xpresso HDF5 files."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from workflow.sequence.layout import DEMO_FILES


def encode_args(track_config: Mapping[str, Any], dataset: str) -> str:
    """The encode stage's input flags, quoted for the shell."""
    entry = track_config["datasets"][dataset]
    if entry.get("demo"):
        paths = {k: f"data/demo/sequence/{dataset}/{name}" for k, name in DEMO_FILES.items()}
    elif entry.get("xpresso"):
        paths = {"xpresso": entry["xpresso"]}
    else:
        paths = {k: entry[k] for k in ("promoters", *DEMO_FILES) if entry.get(k)}
    return " ".join(f"--{key} {shlex.quote(str(path))}" for key, path in paths.items())
