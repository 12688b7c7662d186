"""Run every hostile case and print the table stage x kind -> outcome, then the totals.

    python -m tests.hostile.table            # all cases (about a minute on 2 cores)
    python -m tests.hostile.table -k flip    # the cases whose id contains "flip"

Exit status 1 when a case ended other than as it should (a traceback, a silent accept, a
partial output, or an outcome other than the expected one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.hostile.bases import Bases
from tests.hostile.cases import CASES
from tests.hostile.damage import injected
from tests.hostile.run import Outcome, outcome


def run_all(keyword: str = "") -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        bases = Bases(Path(tmp) / "bases")
        for number, case in enumerate(c for c in CASES if keyword in c.id):
            started = time.monotonic()
            folder = Path(tmp) / f"case{number}"
            result: Outcome = outcome(case, bases, folder)
            if injected(folder):
                result.kind = "shell ran"
            rows.append((case, result, time.monotonic() - started))
    return rows


def table(rows: list[tuple]) -> str:
    kinds = list(dict.fromkeys(case.kind for case, _, _ in rows))
    stages = list(dict.fromkeys(case.stage for case, _, _ in rows))
    cells: dict[tuple[str, str], list[str]] = {}
    for case, result, _ in rows:
        mark = "" if result.kind == case.expect else " (!)"
        cells.setdefault((case.stage, case.kind), []).append(result.kind + mark)
    width = max(len(s) for s in stages)
    lines = ["| " + "stage".ljust(width) + " | " + " | ".join(kinds) + " |"]
    lines.append("|" + "-" * (width + 2) + "|" + "|".join("-" * (len(k) + 2) for k in kinds) + "|")
    for stage in stages:
        row = [", ".join(cells.get((stage, kind), ["-"])) for kind in kinds]
        lines.append("| " + stage.ljust(width) + " | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-k", "--keyword", default="", help="only cases whose id contains it")
    parser.add_argument("-v", "--verbose", action="store_true", help="each case's message")
    args = parser.parse_args()
    rows = run_all(args.keyword)
    print(table(rows))
    print()
    wrong = [(c, r) for c, r, _ in rows if r.kind != c.expect]
    findings = ("traceback", "unclean failure", "silently accepted", "error with partial output",
                "shell ran")  # fmt: skip
    for kind in findings:
        print(f"{kind}: {sum(r.kind == kind for _, r, _ in rows)}")
    print(
        f"cases: {len(rows)}, as expected: {len(rows) - len(wrong)}, "
        f"time: {sum(t for _, _, t in rows):.0f} s"
    )
    for case, result, seconds in rows:
        if args.verbose or result.kind != case.expect:
            print(
                f"- {case.id}: {result.kind} (expected {case.expect}; {seconds:.1f} s) "
                f"{result.detail} {result.leftovers or ''}"
            )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
