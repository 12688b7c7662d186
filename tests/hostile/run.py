"""Running one hostile case: the stage's command line in this process (as ``run_cli`` runs it
for a rule, without a Python start-up per case), and what came of it."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from tests.conftest import ROOT
from tests.hostile.bases import Bases

#: What a stage may do with hostile input; anything else is a finding.
EXPECTED = ("error", "skip", "ok")


@dataclass
class Case:
    """One damage to one input of one stage. ``build`` writes the input under the case's
    folder and returns the stage's arguments (``scripts/<track>.py <stage> ...``); every
    output goes under ``<folder>/out``. ``skips`` counts what the stage reported skipping."""

    stage: str
    kind: str
    expect: str
    build: Callable[[Bases, Path], list[str | Path]]
    skips: Callable[[Path], int] | None = None
    name: str = ""

    @property
    def id(self) -> str:
        return f"{self.stage} | {self.kind}" + (f" | {self.name}" if self.name else "")


@dataclass
class Outcome:
    """``kind``: error, skip, ok, or a finding: traceback, unclean failure (a non-zero exit
    without exactly one ``error:`` line), silently accepted, error with partial output."""

    kind: str
    status: int | None
    stderr: str
    detail: str = ""
    leftovers: list[str] = field(default_factory=list)


@functools.cache
def script(track: str) -> ModuleType:
    """``scripts/<track>.py`` as a module (its ``build_parser``)."""
    spec = importlib.util.spec_from_file_location(f"lsai_script_{track}", ROOT / "scripts" /
                                                  f"{track}.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: Sequence[str | Path]) -> tuple[int | None, str, str]:
    """(exit status or None on an escaped exception, stderr, the traceback if one escaped)."""
    from workflow.common.cli import run_cli

    track = Path(str(args[0])).stem
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = run_cli(script(track).build_parser, [str(a) for a in args[1:]])
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - a traceback is what the suite looks for
            return None, stderr.getvalue(), traceback.format_exc()
    return status, stderr.getvalue(), ""


def outcome(case: Case, bases: Bases, folder: Path) -> Outcome:
    """Build the case under ``folder``, run its stage, classify what happened."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        args = case.build(bases, folder)  # a base built on first use logs its training
    status, stderr, tb = run(args)
    out = folder / "out"
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) \
        if out.is_dir() else []  # fmt: skip
    errors = [line for line in stderr.split("\n") if line.startswith("error: ")]
    if status is None:
        return Outcome("traceback", None, stderr, tb.strip().splitlines()[-1])
    if status != 0:
        if status == 2 and len(errors) == 1 and "Traceback" not in stderr:
            kind = "error" if not leftovers else "error with partial output"
            return Outcome(kind, status, stderr, errors[0], leftovers)
        kind = "traceback" if "Traceback" in stderr else "unclean failure"
        return Outcome(kind, status, stderr, (stderr.strip().splitlines() or [""])[-1])
    skipped = case.skips(folder) if case.skips else 0
    if skipped:
        return Outcome("skip", status, stderr, f"{skipped} skipped")
    return Outcome("ok" if case.expect == "ok" else "silently accepted", status, stderr)


def count_rows(*parts: str) -> Callable[[Path], int]:
    """A ``skips`` counter: data rows of a TSV under the case's folder (header excluded)."""

    def count(folder: Path) -> int:
        path = folder.joinpath(*parts)
        if not path.is_file():
            return 0
        return max(len([x for x in path.read_text().splitlines() if x.strip()]) - 1, 0)

    return count
