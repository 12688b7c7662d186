"""Where a sequence dataset's inputs come from, for the rules: the demo's files, the files the
config names (a genome + TSS table or a per-gene promoter FASTA, with the tables), or a folder
of the published Xpresso HDF5 files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflow.sequence.layout import DEMO_FILES


def encode_args(track_config: Mapping[str, Any], dataset: str) -> list[str]:
    """The encode stage's input flags as arguments (the rule quotes each with ``:q``)."""
    entry = track_config["datasets"][dataset]
    if entry.get("demo"):
        paths = {k: f"data/demo/sequence/{dataset}/{name}" for k, name in DEMO_FILES.items()}
    elif entry.get("xpresso"):
        paths = {"xpresso": entry["xpresso"]}
    else:
        paths = {k: entry[k] for k in ("promoters", *DEMO_FILES) if entry.get(k)}
    args = [arg for key, path in paths.items() for arg in (f"--{key}", str(path))]
    scale = entry.get("abundance_scale") or "linear"
    return args + (["--abundance-scale", scale] if scale != "linear" else [])
