#!/usr/bin/env python3
"""A fake IBM LSF on one machine, enough for snakemake-executor-plugin-lsf (0.3.3) to run a DAG.

``bsub``, ``bjobs``, ``bkill``, ``bhist``, ``badmin``, ``lsclusters`` and ``lsid`` in this folder
are links to this file; it acts as the command it is called as. Jobs run here, in the
background, with the job's ``-cwd``, ``-o``/``-e`` logs and LSF's ``LSB_*`` variables.

Configuration, as on a real cluster: ``$LSF_ENVDIR/lsf.conf`` names ``LSF_CONFDIR`` and
``LSB_SHAREDIR``; the cluster is the ``<name>`` of ``$LSF_CONFDIR/lsf.cluster.<name>``;
``$LSF_CONFDIR/lsbatch/<name>/configdir/`` holds ``lsb.params`` and ``lsb.queues``. A queue's
``RUNLIMIT = [default] max`` ([hh:]mm) is enforced at submission (a longer ``-W`` is refused,
as LSF does) and at run time (scaled by ``FAKE_LSF_SECONDS_PER_MINUTE``, default 60). The
``FAKE_HOST_SLOTS``/``FAKE_HOST_GPUS``/``FAKE_HOST_MEM_MB`` keys of a queue describe its hosts
(real LSF reads them from the hosts): a job that no host could hold is refused at submission
where real LSF would leave it pending for ever.

State lives in ``$FAKE_LSF_DIR``: ``jobs/<id>.json`` per job and ``bsub.jsonl``, one line per
submission with the exact argv, so tests can read what was asked. A job waits
``FAKE_LSF_PEND_SECONDS`` (default 1) in PEND before it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import getpass
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VALUE_OPTIONS = {"-J", "-o", "-e", "-oo", "-eo", "-env", "-P", "-q", "-W", "-n", "-R", "-cwd"}
VALUE_OPTIONS |= {"-gpu", "-M", "-u", "-G", "-app", "-m", "-w"}
FLAG_OPTIONS = {"-B", "-N", "-x"}
UNITS_MB = {"KB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024**2}
HOST = socket.gethostname().split(".")[0]
RUNLIMIT_EXIT = 140  # LSF's exit code of a job killed at its run limit


class LsfError(Exception):
    """A refusal, printed as LSF prints it; the command exits 255."""


# --- configuration -------------------------------------------------------------------------


def read_keys(path: Path) -> dict[str, str]:
    """``KEY = VALUE`` lines (lsf.conf, lsb.params) without comments or quotes."""
    keys = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            keys[key] = value.strip("\"'")
    return keys


def lsf_conf() -> dict[str, str]:
    path = Path(os.environ.get("LSF_ENVDIR", "/etc")) / "lsf.conf"
    if not path.is_file():
        raise LsfError(f"{path}: cannot open lsf.conf (set LSF_ENVDIR)")
    return read_keys(path)


def cluster_name(conf: dict[str, str]) -> str:
    found = sorted(Path(conf["LSF_CONFDIR"]).glob("lsf.cluster.*"))
    if not found:
        raise LsfError(f"{conf['LSF_CONFDIR']}: no lsf.cluster.<name> file")
    return found[0].name.removeprefix("lsf.cluster.")


def configdir(conf: dict[str, str]) -> Path:
    return Path(conf["LSF_CONFDIR"]) / "lsbatch" / cluster_name(conf) / "configdir"


def queues(conf: dict[str, str]) -> dict[str, dict[str, str]]:
    """The ``Begin Queue`` ... ``End Queue`` sections of lsb.queues, by QUEUE_NAME."""
    found, section = {}, None
    for line in (configdir(conf) / "lsb.queues").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line == "Begin Queue":
            section = {}
        elif line == "End Queue" and section is not None:
            found[section["QUEUE_NAME"]] = section
            section = None
        elif section is not None and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            section[key] = value
    return found


def minutes(limit: str) -> int:
    """An LSF time limit, ``[hh:]mm``, in minutes."""
    hours, _, mins = limit.rpartition(":")
    return int(hours or 0) * 60 + int(mins)


# --- state ---------------------------------------------------------------------------------


def state_dir() -> Path:
    if not os.environ.get("FAKE_LSF_DIR"):
        raise LsfError("FAKE_LSF_DIR is not set: the fake LSF keeps its jobs there")
    path = Path(os.environ["FAKE_LSF_DIR"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked():
    """One writer at a time: bsub, bkill and the job runners all change job files."""
    with open(state_dir() / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def job_path(jobid: str) -> Path:
    return state_dir() / "jobs" / f"{jobid}.json"


def load_job(jobid: str) -> dict[str, Any] | None:
    path = job_path(jobid)
    return json.loads(path.read_text()) if path.is_file() else None


def save_job(job: dict[str, Any]) -> None:
    path = job_path(job["jobid"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)


def update_job(jobid: str, **changes: Any) -> dict[str, Any]:
    with locked():
        job = load_job(jobid)
        job.update(changes)
        save_job(job)
    return job


def all_jobs() -> list[dict[str, Any]]:
    jobs = [json.loads(p.read_text()) for p in (state_dir() / "jobs").glob("*.json")]
    return sorted(jobs, key=lambda j: int(j["jobid"]))


# --- bsub ----------------------------------------------------------------------------------


def parse_bsub(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Options (each a list: -R may repeat) and the job command (the first non-option on)."""
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        name = argv[i]
        if name in FLAG_OPTIONS:
            options.setdefault(name, []).append("")
            i += 1
        elif name in VALUE_OPTIONS and i + 1 < len(argv):
            options.setdefault(name, []).append(argv[i + 1])
            i += 2
        else:
            raise LsfError(f"bsub: illegal option or missing value: {name}")
    if i == len(argv):
        raise LsfError("bsub: no job command (this fake reads no job script from stdin)")
    return options, argv[i:]


def requirements(options: dict[str, list[str]], unit: str) -> dict[str, Any]:
    """Slots, memory per slot (MB), span and GPUs that ``-n``, ``-R`` and ``-gpu`` ask for."""
    text = " ".join(options.get("-R", []))
    mem = re.search(r"rusage\[[^\]]*\bmem=([\d.]+)([KMGT]B)?", text)
    span = re.search(r"span\[([^\]]*)\]", text)
    gpu = options.get("-gpu", [None])[-1]
    gpus = 0
    if gpu is not None:
        num = re.search(r"(?:^|:)num=(\d+)", gpu)
        gpus = int(num.group(1)) if num else 1
    try:
        slots = int(options.get("-n", ["1"])[-1])
    except ValueError as err:
        raise LsfError(f"bsub: -n {options['-n'][-1]}: not a number of slots") from err
    mem_mb = float(mem.group(1)) * UNITS_MB[mem.group(2) or unit] if mem else None
    return {
        "slots": slots,
        "mem_mb_per_slot": mem_mb,
        "span": span.group(1) if span else None,
        "gpus": gpus,
    }


def check_queue(queue: dict[str, str], runlimit: int | None, need: dict[str, Any]) -> int:
    """The job's run limit in minutes; refuses what the queue does not allow or cannot hold."""
    limits = [minutes(x) for x in queue.get("RUNLIMIT", "").split()]
    if runlimit is not None and limits and runlimit > limits[-1]:
        raise LsfError("Cannot exceed queue's hard limit(s). Job not submitted.")
    if runlimit is None:
        runlimit = limits[0] if limits else None
    slots = int(queue.get("FAKE_HOST_SLOTS", 10**6))
    gpus = int(queue.get("FAKE_HOST_GPUS", 0))
    mem = float(queue.get("FAKE_HOST_MEM_MB", 10**12))
    one_host = need["span"] == "hosts=1"
    if one_host and need["slots"] > slots:
        raise LsfError(f"fake LSF: {need['slots']} slots on one host; hosts have {slots}")
    if need["gpus"] > gpus:
        raise LsfError(f"fake LSF: {need['gpus']} GPUs asked; the queue's hosts have {gpus}")
    per_host = need["slots"] if one_host else min(need["slots"], slots)
    if need["mem_mb_per_slot"] and need["mem_mb_per_slot"] * per_host > mem:
        total = need["mem_mb_per_slot"] * per_host
        raise LsfError(f"fake LSF: {total:.0f} MB on one host; hosts have {mem:.0f}")
    return runlimit


def bsub(argv: list[str]) -> int:
    conf = lsf_conf()
    options, command = parse_bsub(argv)
    last = {name: values[-1] for name, values in options.items()}
    queue_name = last.get("-q") or read_keys(configdir(conf) / "lsb.params").get("DEFAULT_QUEUE")
    known = queues(conf)
    if queue_name not in known:
        raise LsfError(f"{queue_name}: No such queue. Job not submitted.")
    need = requirements(options, conf.get("LSF_UNIT_FOR_LIMITS", "KB"))
    runlimit = check_queue(known[queue_name], minutes(last["-W"]) if "-W" in last else None, need)
    with locked():
        counter = state_dir() / "last_jobid"
        jobid = str(int(counter.read_text()) + 1 if counter.exists() else 1)
        counter.write_text(jobid)
        cwd = last.get("-cwd", os.getcwd())
        job = {
            "jobid": jobid,
            "name": last.get("-J", command[0]),
            "queue": queue_name,
            "project": last.get("-P", "default"),
            "user": getpass.getuser(),
            "stat": "PEND",
            "exit_code": None,
            "submit_time": time.time(),
            "cwd": cwd,
            "command": " ".join(command),
            "runlimit_min": runlimit,
            "pgid": None,
            "out": _log_name(last.get("-oo", last.get("-o")), jobid, cwd),
            "err": _log_name(last.get("-eo", last.get("-e")), jobid, cwd),
            "overwrite": "-oo" in last,
            "env_none": last.get("-env") == "none",
            **need,
        }
        save_job(job)
        with open(state_dir() / "bsub.jsonl", "a") as log:
            log.write(json.dumps({"jobid": jobid, "argv": argv, "cwd": os.getcwd()}) + "\n")
    subprocess.Popen(
        [sys.executable, os.path.realpath(__file__), "run", jobid],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    print(f"Job <{jobid}> is submitted to queue <{queue_name}>.")
    return 0


def _log_name(name: str | None, jobid: str, cwd: str) -> str | None:
    if not name:
        return None
    path = Path(name.replace("%J", jobid).replace("%I", "0"))
    return str(path if path.is_absolute() else Path(cwd) / path)


# --- the job runner (what sbatchd does on the execution host) -----------------------------


def job_environment(job: dict[str, Any]) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} if job["env_none"] else dict(os.environ)
    env.update(
        LSB_JOBID=job["jobid"],
        LSB_JOBNAME=job["name"],
        LSB_QUEUE=job["queue"],
        LSB_PROJECT_NAME=job["project"],
        LSB_DJOB_NUMPROC=str(job["slots"]),
        LSB_MAX_NUM_PROCESSORS=str(job["slots"]),
        LSB_HOSTS=" ".join([HOST] * job["slots"]),
        LSB_MCPU_HOSTS=f"{HOST} {job['slots']}",
        # the job sees the GPUs it was given, and none when it asked for none
        CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(job["gpus"])),
    )
    return env


def run(jobid: str) -> int:
    time.sleep(float(os.environ.get("FAKE_LSF_PEND_SECONDS", "1")))
    with locked():
        job = load_job(jobid)
        if job["stat"] != "PEND":  # killed while pending
            return 0
        out = open(job["out"] or os.devnull, "w" if job["overwrite"] else "a")
        err = out if job["err"] in (None, job["out"]) else open(job["err"], "a")
        proc = subprocess.Popen(
            ["/bin/sh", "-c", job["command"]],
            cwd=job["cwd"],
            env=job_environment(job),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        job.update(stat="RUN", pgid=proc.pid, start_time=time.time())
        save_job(job)
    reason = None
    limit = job["runlimit_min"]
    scale = float(os.environ.get("FAKE_LSF_SECONDS_PER_MINUTE", "60"))
    try:
        code = proc.wait(timeout=limit * scale if limit else None)
    except subprocess.TimeoutExpired:
        reason = "TERM_RUNLIMIT: job killed after reaching LSF run time limit."
        terminate(proc.pid, proc)
        code = RUNLIMIT_EXIT
    with locked():
        job = load_job(jobid)
        if job.get("killed"):
            reason, code = "TERM_OWNER: job killed by owner.", 130
        job.update(stat="DONE" if code == 0 else "EXIT", exit_code=code, end_time=time.time())
        save_job(job)
    done = "Successfully completed." if code == 0 else f"Exited with exit code {code}."
    out.write(
        f"\n{'-' * 60}\nSender: LSF System (fake)\nSubject: Job {jobid}: <{job['name']}> "
        f"{'Done' if code == 0 else 'Exited'}\n\nJob was executed on host(s) "
        f"<{job['slots']}*{HOST}>, in queue <{job['queue']}>.\n{reason or ''}\n{done}\n"
    )
    out.close()
    return 0


def terminate(pgid: int, leader: subprocess.Popen | None = None) -> None:
    """SIGINT, SIGTERM, then SIGKILL a few seconds apart, as LSF ends a job. The runner passes
    the job's shell (``leader``) so that it reaps it; bkill waits for the group to go."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if leader is None:
            time.sleep(2)
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=2)
            return


# --- queries and control -------------------------------------------------------------------


def split_flags(argv: list[str], takes_value: set[str]) -> tuple[dict[str, str], list[str]]:
    """getopt-style short options (``-aJ name``), plus LSF's long single-dash words."""
    options, rest, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            i += 1
            continue
        if arg in ("-noheader", "-json"):
            options[arg[1:]] = ""
            i += 1
            continue
        for pos, letter in enumerate(arg[1:], start=1):
            if letter in takes_value:
                value = arg[pos + 1 :] or (argv[i + 1] if i + 1 < len(argv) else "")
                options[letter] = value
                i += 0 if arg[pos + 1 :] else 1
                break
            options[letter] = ""
        i += 1
    return options, rest


FIELDS = {
    "jobid": "jobid",
    "stat": "stat",
    "user": "user",
    "queue": "queue",
    "job_name": "name",
    "exit_code": "exit_code",
    "proj_name": "project",
    "project": "project",
    "slots": "slots",
    "nalloc_slot": "slots",
}


def bjobs(argv: list[str]) -> int:
    options, ids = split_flags(argv, {"J", "o", "q", "u", "P"})
    jobs = all_jobs()
    if ids:
        missing = [i for i in ids if i not in {j["jobid"] for j in jobs}]
        for jobid in missing:
            print(f"Job <{jobid}> is not found", file=sys.stderr)
        jobs = [j for j in jobs if j["jobid"] in ids]
    elif "a" not in options:
        jobs = [j for j in jobs if j["stat"] in ("PEND", "RUN")]
    if "J" in options:
        jobs = [j for j in jobs if fnmatch.fnmatchcase(j["name"], options["J"])]
    if "q" in options:
        jobs = [j for j in jobs if j["queue"] == options["q"]]
    if not jobs:
        print(
            "No job found" if "a" in options or ids else "No unfinished job found", file=sys.stderr
        )
        return 255 if ids else 0
    if "o" in options:
        spec = options["o"].split("delimiter=")
        names = [name.split(":")[0].lower() for name in spec[0].split()]
        delimiter = spec[1].strip("'\" ") if len(spec) > 1 else " "
        unknown = [n for n in names if n not in FIELDS]
        if unknown:
            raise LsfError(f"{unknown[0]}: Illegal field in -o")
    else:
        names, delimiter = ["jobid", "user", "stat", "queue", "job_name"], " "
    if "noheader" not in options:
        print(delimiter.join(n.upper() for n in names))
    for job in jobs:
        values = ["-" if job[FIELDS[n]] is None else str(job[FIELDS[n]]) for n in names]
        print(delimiter.join(values))
    return 255 if ids and len(jobs) < len(ids) else 0


def bkill(argv: list[str]) -> int:
    options, ids = split_flags(argv, {"J", "s", "q", "u"})
    if "J" in options:
        ids += [j["jobid"] for j in all_jobs() if fnmatch.fnmatchcase(j["name"], options["J"])]
    status = 0
    for jobid in ids:
        with locked():
            job = load_job(jobid)
            if job is None:
                print(f"Job <{jobid}>: No matching job found", file=sys.stderr)
                status = 255
                continue
            if job["stat"] not in ("PEND", "RUN"):
                print(f"Job <{jobid}>: Job has already finished", file=sys.stderr)
                status = 255
                continue
            if job["stat"] == "PEND":
                job.update(stat="EXIT", exit_code=130, end_time=time.time())
            job["killed"] = True
            save_job(job)
        if job["pgid"]:
            terminate(job["pgid"])
        print(f"Job <{jobid}> is being terminated")
    return status


def bhist(argv: list[str]) -> int:
    """``bhist -l -a``: one header line per job (the plugin reads ``Project <...>`` from it)."""
    for job in all_jobs():
        print(
            f"Job <{job['jobid']}>, Job Name <{job['name']}>, User <{job['user']}>, "
            f"Project <{job['project']}>, Command <{job['command'][:60]}>"
        )
    return 0


def badmin(argv: list[str]) -> int:
    if argv[:2] != ["showconf", "mbd"]:
        raise LsfError("badmin: this fake answers only `badmin showconf mbd`")
    conf = lsf_conf()
    keys = {**conf, **read_keys(configdir(conf) / "lsb.params")}
    print(f"MBD configuration at {time.strftime('%a %b %d %H:%M:%S %Y')}")
    for key, value in keys.items():
        print(f"    {key} = {value}")
    return 0


def lsclusters(argv: list[str]) -> int:
    name = cluster_name(lsf_conf())
    print("CLUSTER_NAME   STATUS   MASTER_HOST               ADMIN    HOSTS  SERVERS")
    print(f"{name:<14} ok       {HOST:<25} lsfadmin     1        1")
    return 0


def lsid(argv: list[str]) -> int:
    conf = lsf_conf()
    print(f"IBM Spectrum LSF (fake) {conf.get('LSF_VERSION', '10.1')}")
    print(f"My cluster name is {cluster_name(conf)}")
    print(f"My master name is {HOST}")
    return 0


COMMANDS = {
    "bsub": bsub,
    "bjobs": bjobs,
    "bkill": bkill,
    "bhist": bhist,
    "badmin": badmin,
    "lsclusters": lsclusters,
    "lsid": lsid,
    "run": lambda argv: run(argv[0]),
}


def main(argv: list[str]) -> int:
    name = os.path.basename(argv[0])
    args = argv[1:]
    if name not in COMMANDS:  # called as fakelsf.py <command> ...
        name, args = (args[0], args[1:]) if args else ("", [])
    if name not in COMMANDS:
        print(f"usage: fakelsf.py {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    try:
        return COMMANDS[name](args)
    except LsfError as err:
        print(err, file=sys.stderr)
        return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv))
