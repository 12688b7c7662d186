"""Plug-in variants: an experiment names a class outside the package in place of a built-in.

A student's variant is one file and one config entry: ``model: variants/distance/my_head.py:
MyHead`` (a file, relative to the working directory) or ``model: my_package.heads:MyHead`` (an
importable module). The class subclasses the track's extension point (:data:`EXTENSION_POINTS`)
and defines the methods that point needs. The workflow checks every variant the config names
before any job runs, makes the file an input of the experiment's jobs (editing it reruns
exactly those), and records the file's sha256 in each run's metrics.json.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflow.common.errors import InputError, first_line

SPEC = re.compile(r"^(?P<source>[^:\s]+):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")

#: track -> settings key -> (the base class a variant subclasses, the methods it must define).
EXTENSION_POINTS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    # a LightningModule that turns a batch into metres; ``inputs`` ("geometry" or "frames",
    # DisNet's or Zhu & Fang's batches) says which data it reads
    "distance": {"model": ("workflow.distance.models:DistanceModule", ("forward",))},
    # a LightningModule-free piece in every other track, the one a group's idea changes:
    # the Perceiver's cross-attention (latents reading tokens)
    "sequence": {"attention": ("workflow.sequence.models:CrossAttention", ("forward",))},
    # DAS-MIL's graph layer (per scale and joint): (x, edge_index) -> node features
    "wsi": {"gnn": ("workflow.wsi.mil:GraphLayer", ("forward",))},
    # FLIP's training objective: open_clip's ClipLoss, plus whatever term the variant adds
    "flip": {"loss": ("workflow.flip.loss:FlipLoss", ("forward",))},
    # the watermark's seeding scheme: a token's context -> the seed of its green list
    "watermark": {"scheme": ("workflow.watermark.greenlist:SeedingScheme", ("seeds",))},
    # the NeRF's per-view pose correction (built-in backend): (c2w, view index) -> c2w
    "nerf": {"pose": ("workflow.nerf.field:PoseCorrection", ("forward",))},
}


def is_variant(value: object) -> bool:
    """Whether a setting's value names a plug-in class (``<source>:<Class>``)."""
    return isinstance(value, str) and SPEC.match(value) is not None


@dataclass(frozen=True)
class Variant:
    """One plug-in class, by the spec the config gives."""

    spec: str
    source: str
    name: str

    @classmethod
    def parse(cls, spec: str) -> Variant:
        match = SPEC.match(spec)
        if match is None:
            raise InputError(spec, "not a variant: give <file>.py:<Class> or <module>:<Class>")
        return cls(spec, match["source"], match["name"])

    @property
    def path(self) -> Path:
        """The file that holds the class (a module's source file)."""
        if self.source.endswith(".py"):
            return Path(self.source)
        try:
            found = importlib.util.find_spec(self.source)
        except (ImportError, ValueError):
            found = None
        if found is None or not found.origin:
            raise InputError(self.source, "variant module not found (not importable)")
        return Path(found.origin)

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def provenance(self) -> dict[str, str]:
        """What a run records of the variant it ran: the spec, the file and its sha256."""
        return {"spec": self.spec, "file": str(self.path), "sha256": self.digest()}

    def load(self, base: type, required: Sequence[str] = ()) -> type:
        """The class, checked: a subclass of ``base`` that defines each ``required`` method
        (itself or through a subclass of ``base``). Any failure names the file."""
        path = self.path
        if not path.is_file():
            raise InputError(path, "variant file not found")
        try:
            module = _import(self.source, path)
        except Exception as err:  # the student's code: any error it raises on import
            raise InputError(
                path, f"cannot import: {type(err).__name__}: {first_line(err)}"
            ) from None
        cls = getattr(module, self.name, None)
        if not isinstance(cls, type):
            raise InputError(path, f"defines no class {self.name}")
        if not issubclass(cls, base):
            raise InputError(path, f"{self.name} is not a subclass of {_qualified(base)}")
        for method in required:
            if not any(method in vars(k) for k in cls.__mro__ if issubclass(k, base)):
                raise InputError(path, f"{self.name} does not define {method}() "
                                 f"(required of a {_qualified(base)})")  # fmt: skip
        return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(source: str, path: Path) -> Any:
    """A module by name, or a file as a module named after its resolved path (so two files
    of one name do not collide, and one file is imported once per process)."""
    if not source.endswith(".py"):
        return importlib.import_module(source)
    resolved = path.resolve()
    name = "lsai_variant_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_variant(track: str, key: str, spec: str) -> type:
    """The class ``spec`` names for ``track``'s setting ``key``, checked against its point."""
    base_spec, required = EXTENSION_POINTS[track][key]
    module, _, name = base_spec.partition(":")
    return Variant.parse(spec).load(getattr(importlib.import_module(module), name), required)


def variants_of(track: str, settings: Mapping[str, Any]) -> dict[str, Variant]:
    """The variants an experiment's settings name, by the extension point's setting."""
    points = EXTENSION_POINTS.get(track, {})
    return {k: Variant.parse(settings[k]) for k in points if is_variant(settings.get(k))}


def variant_files(track: str, settings: Mapping[str, Any]) -> list[str]:
    """The files of an experiment's variants (its jobs' inputs: editing one reruns them)."""
    return [str(v.path) for v in variants_of(track, settings).values()]


def check_variants(track: str, experiments: Iterable[Mapping[str, Any]]) -> None:
    """Load every variant the experiments name, so a bad one stops the workflow before any
    job, with its file and what is wrong."""
    for settings in experiments:
        for key, variant in variants_of(track, settings).items():
            load_variant(track, key, variant.spec)
