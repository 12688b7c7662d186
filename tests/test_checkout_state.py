"""The test suite does not depend on what the user ran in the checkout before.

README's order is `make demo`, then `make test`: the tests then find finished results in the
checkout. Here the dry-run checks run from a checkout copy that holds them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, copy_repo, finish_dag


@pytest.mark.slow
def test_profile_checks_pass_in_a_checkout_holding_finished_results(tmp_path):
    checkout = copy_repo(tmp_path, "pyproject.toml")
    shutil.copytree(
        ROOT / "tests", checkout / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    finish_dag(checkout)
    assert (checkout / "results/report/summary.csv").exists()
    state = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1"],
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    assert "Nothing to be done" in state.stdout + state.stderr  # what `make demo` leaves

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_profiles.py"],
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:]
