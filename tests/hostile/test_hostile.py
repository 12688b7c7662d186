"""The hostile-input suite (tests/hostile/cases.py): every case ends as it must - one
``error:`` line and nothing written, a counted skip, or a plain read - never a traceback,
a silent accept or a shell command run from a path. ``python -m tests.hostile.table``
prints the same cases as a table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.bases import Bases
from tests.hostile.cases import CASES
from tests.hostile.damage import injected
from tests.hostile.run import EXPECTED, outcome


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Bases:
    return Bases(tmp_path_factory.mktemp("bases"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_ends_as_it_must(case, bases: Bases, tmp_path: Path):
    assert case.expect in EXPECTED
    result = outcome(case, bases, tmp_path / "case")
    assert (result.kind, result.detail) == (case.expect, result.detail), result.stderr[-3000:]
    if result.kind == "error":
        assert result.detail.startswith(f"error: {tmp_path}"), result.detail  # names the file
    assert injected(tmp_path) == []
    assert not (tmp_path / "case" / "RAN").exists()  # no checkpoint ran its payload


def test_every_kind_of_the_issue_is_covered():
    kinds = {c.kind for c in CASES}
    assert kinds >= {"bomb", "truncated", "traversal", "duplicates", "NaN labels",
                     "injection path", "pickle"}  # fmt: skip
