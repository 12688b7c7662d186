"""Snakemake through the real HTCondor or Kubernetes executor plugin, with only the cluster's
API faked: what the plugin sends is recorded, and each job is reported back the way the
cluster reports it, so the submit descriptions and pod specs of a real run can be checked
without a pool or a cluster.

    python tests/sites/capture.py htcondor|kubernetes RECORD [--run] -- <snakemake args>

RECORD gets one JSON object per submission. HTCondor: ``htcondor2.Schedd`` is replaced; its
``submit`` records the description and writes the job's events to the description's ``log``,
as the pool's daemons would. Without ``--run`` every job terminates with return value 1 (the
plugin reports it failed); with ``--run`` the job's ``executable arguments`` run here, in the
working directory (a shared filesystem), and its return value is reported. Kubernetes: a
kubeconfig for an unreachable server is written, and the API calls the plugin makes
(``BatchV1Api``'s jobs, ``CoreV1Api``'s secrets and pods) are replaced: a created job is
recorded (as the JSON the client would send) and reported failed.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()


def _record(path: Path, entry: dict[str, Any]) -> None:
    with _LOCK, path.open("a") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")


def _event(code: int, cluster: int, text: str, body: str = "") -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"{code:03d} ({cluster:03d}.000.000) {stamp} {text}\n{body}...\n"


def _terminated(cluster: int, value: int) -> str:
    usage = "".join(
        f"\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  {what} Usage\n"
        for what in ("Run Remote", "Run Local", "Total Remote", "Total Local")
    )
    sizes = "".join(
        f"\t0  -  {what} Bytes {way} By Job\n"
        for what in ("Run", "Total")
        for way in ("Sent", "Received")
    )
    body = f"\t(1) Normal termination (return value {value})\n{usage}{sizes}"
    return _event(5, cluster, "Job terminated.", body)


def _environment(value: str) -> dict[str, str]:
    """HTCondor's new-style ``environment``: ``KEY="value"`` pairs (a quote doubled)."""
    pairs = shlex.split(value.replace('""', '\\"')) if value else []
    return dict(pair.split("=", 1) for pair in pairs)


def _job_environment(submit: dict[str, str]) -> dict[str, str]:
    """What a job starts with: the submitter's environment only with ``getenv = True``,
    else a system PATH; plus the description's ``environment``."""
    if submit.get("getenv", "False").lower() in ("true", "1"):
        base = dict(os.environ)
    else:
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    return {**base, **_environment(submit.get("environment", ""))}


class _SubmitResult:
    def __init__(self, cluster: int) -> None:
        self._cluster = cluster

    def cluster(self) -> int:
        return self._cluster


def _htcondor(record: Path, run: bool) -> None:
    """Replace the schedd: the plugin's only way to the pool besides the event log."""
    import htcondor2

    clusters = itertools.count(1)

    class Schedd:
        def submit(self, description: Any, count: int = 0, **kwargs: Any) -> _SubmitResult:
            cluster = next(clusters)
            submit = dict(description)
            _record(record, {"backend": "htcondor", "cluster": cluster, "submit": submit})
            log = Path(submit["log"])
            with _LOCK, log.open("a") as out:
                out.write(_event(0, cluster, "Job submitted from host: <127.0.0.1:9618>"))
            threading.Thread(target=self._execute, args=(cluster, submit), daemon=True).start()
            return _SubmitResult(cluster)

        @staticmethod
        def _execute(cluster: int, submit: dict[str, str]) -> None:
            value = 1
            if run:
                with _LOCK, open(submit["log"], "a") as out:
                    out.write(_event(1, cluster, "Job executing on host: <127.0.0.1:9618>"))
                paths = {
                    key: submit[key].replace("$(ClusterId)", str(cluster))
                    for key in ("output", "error")
                }
                env = _job_environment(submit)
                # old-style arguments: split at white space (the plugin drops single quotes)
                command = [submit["executable"], *submit["arguments"].split()]
                with open(paths["output"], "w") as out, open(paths["error"], "w") as err:
                    value = subprocess.run(command, stdout=out, stderr=err, env=env).returncode
            with _LOCK, open(submit["log"], "a") as out:
                out.write(_terminated(cluster, value))

        def query(self, *args: Any, **kwargs: Any) -> list:
            return []

        def history(self, *args: Any, **kwargs: Any) -> list:
            return []

        def act(self, *args: Any, **kwargs: Any) -> None:
            return None

    htcondor2.Schedd = Schedd


def _kubeconfig(directory: Path) -> Path:
    path = directory / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


def _kubernetes(record: Path) -> None:
    """Replace the API calls of the plugin (jobs, their pods, the run's secret)."""
    import kubernetes.client as client

    serialize = client.ApiClient().sanitize_for_serialization

    def create_namespaced_job(self: Any, namespace: str, body: Any, **kwargs: Any) -> Any:
        entry = {"backend": "kubernetes", "namespace": namespace, "job": serialize(body)}
        _record(record, entry)
        return body

    def read_namespaced_job_status(self: Any, name: str, namespace: str, **kwargs: Any) -> Any:
        return client.V1Job(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            status=client.V1JobStatus(failed=1),
        )

    def create_namespaced_secret(self: Any, namespace: str, body: Any, **kwargs: Any) -> Any:
        # the names of the variables only: their values may be credentials
        keys = sorted((body.data or {}).keys())
        _record(record, {"backend": "kubernetes", "namespace": namespace, "secret_keys": keys})
        return body

    def list_namespaced_pod(self: Any, namespace: str, **kwargs: Any) -> Any:
        return client.V1PodList(items=[])

    def nothing(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    client.BatchV1Api.create_namespaced_job = create_namespaced_job
    client.BatchV1Api.read_namespaced_job_status = read_namespaced_job_status
    client.BatchV1Api.delete_namespaced_job = nothing
    client.CoreV1Api.create_namespaced_secret = create_namespaced_secret
    client.CoreV1Api.delete_namespaced_secret = nothing
    client.CoreV1Api.list_namespaced_pod = list_namespaced_pod
    client.CoreV1Api.delete_namespaced_pod = nothing


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv[: argv.index("--")]) < 2:
        sys.exit(__doc__)
    backend, record, *flags = argv[: argv.index("--")]
    snakemake_args = argv[argv.index("--") + 1 :]
    record_path = Path(record).resolve()
    if backend == "htcondor":
        os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
        _htcondor(record_path, "--run" in flags)
    elif backend == "kubernetes":
        # read at import time by the client's config loader
        os.environ["KUBECONFIG"] = str(_kubeconfig(Path(tempfile.mkdtemp())))
        _kubernetes(record_path)
    else:
        sys.exit(f"unknown backend {backend!r}: htcondor or kubernetes")
    from snakemake.cli import main as snakemake_main

    return snakemake_main(snakemake_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
