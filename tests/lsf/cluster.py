"""A fake LSF cluster shaped like DTU's (tests/lsf/fake): its configuration files, the
environment that puts its commands first on PATH, and what it recorded.

The queues carry DTU's names and walltime limits (profiles/dtu-lsf/resources.yaml cites
them) and DTU's 24 cores on an hpc node and 2 GPUs on an A100 node; the other host sizes are
assumed, generous bounds: the fake refuses a job no such host could hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FAKE_BIN = Path(__file__).resolve().parent / "fake"
CLUSTER = "dcc"

#: name -> (RUNLIMIT "default max", slots per host, GPUs per host, memory per host in MB)
QUEUES = {
    "hpc": ("15 72:00", 24, 0, 256000),
    "gpuv100": ("15 24:00", 24, 4, 192000),
    "gpua100": ("15 24:00", 64, 2, 512000),
}


@dataclass
class FakeLsf:
    root: Path
    pend_seconds: float = 0.5
    seconds_per_minute: float = 60.0

    @property
    def envdir(self) -> Path:
        return self.root / "conf"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write_config(self) -> None:
        """lsf.conf, the cluster file, lsb.params (default queue) and lsb.queues."""
        configdir = self.envdir / "lsbatch" / CLUSTER / "configdir"
        configdir.mkdir(parents=True)
        logdir = self.root / "work" / CLUSTER / "logdir"
        logdir.mkdir(parents=True)
        (logdir / "lsb.events").touch()  # the plugin's fallback reads it (awk) if bjobs forgets
        (self.envdir / "lsf.conf").write_text(
            f"LSF_CONFDIR={self.envdir}\nLSB_SHAREDIR={self.root / 'work'}\n"
            "LSF_UNIT_FOR_LIMITS=MB\nLSF_VERSION=10.1\n"
        )
        (self.envdir / f"lsf.cluster.{CLUSTER}").write_text("# hosts: this machine\n")
        (configdir / "lsb.params").write_text(
            "Begin Parameters\nDEFAULT_QUEUE = hpc\nEnd Parameters\n"
        )
        sections = [
            f"Begin Queue\nQUEUE_NAME = {name}\nRUNLIMIT = {limit}\nFAKE_HOST_SLOTS = {slots}\n"
            f"FAKE_HOST_GPUS = {gpus}\nFAKE_HOST_MEM_MB = {mem}\nEnd Queue\n"
            for name, (limit, slots, gpus, mem) in QUEUES.items()
        ]
        (configdir / "lsb.queues").write_text("\n".join(sections))

    @property
    def env(self) -> dict[str, str]:
        """Environment of Snakemake (and of the jobs, which inherit it: ``bsub -env all``)."""
        path = os.pathsep.join(
            [str(FAKE_BIN), str(Path(sys.executable).parent), os.environ["PATH"]]
        )
        return {
            **os.environ,
            "PATH": path,
            "LSF_ENVDIR": str(self.envdir),
            "FAKE_LSF_DIR": str(self.state),
            "FAKE_LSF_PEND_SECONDS": str(self.pend_seconds),
            "FAKE_LSF_SECONDS_PER_MINUTE": str(self.seconds_per_minute),
        }

    def stop(self) -> None:
        """End the jobs still pending or running (a failed test leaves none behind)."""
        active = [j for j, job in self.jobs().items() if job["stat"] in ("PEND", "RUN")]
        if active:
            subprocess.run(["bkill", *active], env=self.env, capture_output=True, check=False)

    def submissions(self) -> list[dict]:
        """Every bsub call: ``{"jobid", "argv", "cwd"}``, in submission order."""
        log = self.state / "bsub.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def jobs(self) -> dict[str, dict]:
        """The fake's record of each job (stat, exit_code, queue, slots, gpus, ...) by id."""
        return {p.stem: json.loads(p.read_text()) for p in (self.state / "jobs").glob("*.json")}


def options(argv: list[str]) -> dict[str, list[str]]:
    """A bsub argv's options (each a list, -R repeats) before the job command."""
    found: dict[str, list[str]] = {}
    i = 0
    while i + 1 < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("-B", "-N", "-x"):
            found.setdefault(argv[i], []).append("")
            i += 1
            continue
        found.setdefault(argv[i], []).append(argv[i + 1])
        i += 2
    return found
