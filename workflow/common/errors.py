"""User-facing input errors: a path and what is wrong with it, never a traceback."""

from __future__ import annotations

from os import PathLike


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
