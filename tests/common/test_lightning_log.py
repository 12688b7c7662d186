"""Lightning's log lines reach a rule's log once, in its format, without advertising tips."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
from workflow.common.cli import setup_logging
setup_logging()  # as a stage does, before its training modules import lightning
import lightning  # its import gives the 'lightning' logger a handler of its own
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from workflow.common.training import one_lightning_log
if {quiet}:
    one_lightning_log()
rank_zero_info("GPU available: False, used: False")
rank_zero_info("\\U0001f4a1 Tip: For seamless cloud logging and experiment tracking, try it")
"""


def lightning_lines(quiet: bool) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(quiet=quiet)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line for line in out.stderr.splitlines() if "available" in line or "Tip" in line]


def test_each_lightning_line_once_in_the_rule_log_format():
    assert len(lightning_lines(quiet=False)) == 4  # twice each, tip included: what it fixes
    lines = lightning_lines(quiet=True)
    assert len(lines) == 1
    assert " INFO lightning.pytorch.utilities.rank_zero: GPU available: False" in lines[0]
