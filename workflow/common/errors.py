"""User-facing input errors: a path and what is wrong with it, never a traceback."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from os import PathLike


def first_line(err: BaseException) -> str:
    """An exception's first line (library messages run to paragraphs), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class InputError(Exception):
    """A missing, truncated, corrupt or malformed input.

    The CLI wrapper prints it as ``error: <path>: <problem>`` and exits with status 2.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BadSample(InputError):
    """Damage confined to one sample (a box, a frame): subject to ``on_bad_sample``."""


@dataclass
class Skips:
    """Samples dropped under ``on_bad_sample: skip``, with where and why (``*.skipped.tsv``)."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, err: InputError, item: str) -> None:
        self.rows.append((err.path, item, err.problem))

    def handle(self, err: InputError, item: str, policy: str, log: logging.Logger) -> None:
        """Apply ``on_bad_sample``: raise under ``fail``; record (and log the first few) under
        ``skip``, so a run over millions of samples does not drown its log."""
        if policy == "fail":
            raise err
        self.add(err, item)
        if len(self) <= 20:
            log.warning("skipped %s: %s: %s", item, err.path, err.problem)

    def __len__(self) -> int:
        return len(self.rows)

    def to_tsv(self) -> str:
        lines = ["path\titem\tproblem"]
        lines += ["\t".join(v.replace("\t", " ") for v in row) for row in self.rows]
        return "\n".join(lines) + "\n"
