#!/usr/bin/env python
"""Time the Leonardo dry-run of a large generated config and print its job count.

The config holds ``--datasets`` MOTSynth-style datasets (one per sequence folder, the worst
case for job count: every dataset has its own index, extract, train and evaluate jobs) x the
Leonardo experiments x 3 seeds. The dry-run runs in a temporary copy of the workflow, as a
user would run it: ``snakemake -n --profile profiles/leonardo --configfile <generated>``.
With ``--profile-out FILE`` the run is also written as a cProfile file
(``python -m pstats FILE`` reads it).

    python tests/benchmarks/dryrun_benchmark.py --datasets 1000
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import copy_repo  # noqa: E402


def generated_config(datasets: int) -> dict:
    base = yaml.safe_load(Path("config/leonardo.yaml").read_text())
    track = base["distance"]
    track["datasets"] = {
        f"seq{i:04d}": {"root": f"/leonardo_work/PROJECT/MOTSynth/{i:04d}"} for i in range(datasets)
    }
    track["datasets"]["demo"] = {"enabled": False}
    return base


def dry_run(workdir: Path, profile_out: Path | None) -> tuple[float, int, str]:
    prefix = [sys.executable]
    if profile_out:
        prefix += ["-m", "cProfile", "-o", str(profile_out)]
    cmd = [
        *prefix,
        "-m",
        "snakemake",
        "-n",
        "--quiet",
        "rules",
        "--profile",
        "profiles/leonardo",
        "--configfile",
        "generated.yaml",
    ]
    env = {**os.environ, "LEONARDO_ACCOUNT": "IscrB_BENCH"}
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"error: dry-run failed:\n{result.stderr[-3000:]}")
    match = re.search(r"^total\s+(\d+)", result.stdout, re.MULTILINE)
    if not match:
        sys.exit(f"error: no job total in the dry-run output:\n{result.stdout[-2000:]}")
    return elapsed, int(match.group(1)), result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=int, default=1000, help="datasets (default 1000)")
    parser.add_argument("--profile-out", type=Path, help="also write a cProfile file here")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[2]
    os.chdir(root)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_repo(Path(tmp))
        (workdir / "generated.yaml").write_text(yaml.safe_dump(generated_config(args.datasets)))
        elapsed, jobs, _ = dry_run(workdir, args.profile_out)
    print(f"datasets: {args.datasets}")
    print(f"jobs: {jobs}")
    print(f"dry-run: {elapsed:.1f} s ({1000 * elapsed / jobs:.2f} ms per job)")


if __name__ == "__main__":
    main()
