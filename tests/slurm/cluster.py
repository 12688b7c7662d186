"""A throwaway single-node SLURM cluster (Debian slurm-wlm + munge) for the profile tests.

The node claims a Leonardo Booster node's shape (32 cores, 4 GPUs, 494000 MB) so that the
Leonardo profile's requests are scheduled unchanged; the GPUs are ordinary files in gres.conf,
so GPU jobs run on the CPU. Accounting is off: job records come from the job-completion log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
PARTITIONS = ("lrd_all_serial", "dcgp_usr_prod", "boost_usr_prod")
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
NODE = {"cpus": 32, "mem_mb": 494000, "gpus": 4}


def clear_stale_link() -> bool:
    """Remove ``DEFAULT_CONF`` when it is a test cluster's link left by a killed test session
    (a symlink to a ``ClusterName=lsai-test`` config, or to nothing, with no slurmctld
    running); otherwise every later session would skip the cluster tests. True if removed."""
    if not DEFAULT_CONF.is_symlink():
        return False
    target = DEFAULT_CONF.resolve()
    ours = not target.exists() or "ClusterName=lsai-test\n" in target.read_text()
    running = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    if ours and not running:
        DEFAULT_CONF.unlink(missing_ok=True)  # each xdist worker checks at collection
        return True
    return False


def missing_programs() -> list[str]:
    return [p for p in (*DAEMONS, *CLIENTS) if shutil.which(p) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def jobcomp(self) -> Path:
        return self.root / "jobcomp.log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue, Snakemake) that talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "gpus", "munge"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        gpus = [r / "gpus" / f"gpu{i}" for i in range(NODE["gpus"])]
        for g in gpus:
            g.touch()
        partitions = "\n".join(
            f"PartitionName={p} Nodes={self.node} MaxTime=INFINITE State=UP"
            + (" Default=YES" if p == "lrd_all_serial" else "")
            for p in PARTITIONS
        )
        self.conf.write_text(f"""\
ClusterName=lsai-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={r / "munge" / "munge.socket"}
CredType=cred/munge
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "slurmctld.log"}
SlurmdLogFile={r / "slurmd.log"}
SlurmdParameters=config_overrides
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MinJobAge=86400
KillWait=5
InactiveLimit=0
{self._node_line()}
{partitions}
""")
        files = f"{r / 'gpus'}/gpu[0-{NODE['gpus'] - 1}]"
        gres = f"AutoDetect=off\nNodeName={self.node} Name=gpu File={files}\n"
        (r / "gres.conf").write_text(gres)
        (r / "munge" / "munge.key").write_bytes(os.urandom(1024))
        os.chmod(r / "munge" / "munge.key", 0o400)

    def _node_line(self) -> str:
        return (
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE['cpus']} "
            f"RealMemory={NODE['mem_mb']} Gres=gpu:{NODE['gpus']} State=UNKNOWN"
        )

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        # Snakemake's job step drops SLURM_CONF before its `srun`, so clients inside jobs read
        # the default path: point it at this cluster's config for the cluster's lifetime.
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            raise RuntimeError(f"{DEFAULT_CONF} exists: this machine has a SLURM setup already")
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        m = self.root / "munge"
        self._spawn(
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={m / 'munge.key'}",
                f"--socket={m / 'munge.socket'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ]
        )
        self._wait(lambda: (m / "munge.socket").exists(), timeout, "munged socket")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn(["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._node_idle, timeout, "node to become idle")

    def _spawn(self, argv: list[str]) -> None:
        log = open(self.root / f"{argv[0]}.out", "ab")
        self.processes.append(
            subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def _node_idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], env=self.env, capture_output=True, text=True
        )
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited; see logs in {self.root}")
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}; see logs in {self.root}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True)
        for p in reversed(self.processes):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        if DEFAULT_CONF.is_symlink() and DEFAULT_CONF.resolve() == self.conf.resolve():
            DEFAULT_CONF.unlink()
        for p in reversed(self.processes):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def run(self, *argv: str) -> str:
        return subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True).stdout

    def records(self) -> list[dict[str, str]]:
        """Completed jobs as the job-completion log has them (one `Key=Value ...` line each)."""
        if not self.jobcomp.exists():
            return []
        return [
            dict(item.split("=", 1) for item in line.split() if "=" in item)
            for line in self.jobcomp.read_text().splitlines()
            if line.strip()
        ]
