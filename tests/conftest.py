"""Shared fixtures: the repository root and a small demo dataset, extracted once per session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
INDEX_SETTINGS = {
    "distance": "feet",
    "min_visibility": 0.18,
    "split_seed": 0,
    "split_sequences": None,
    "split_fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
    "frame_stride": {"train": 1, "val": 1, "test": 1},
}


TRACKED = [
    "Snakefile",
    "config",
    "rules",
    "scripts",
    "workflow",
    "envs",
    "profiles",
    "report",
    "variants",
    "groups",
]


#: The modules that take minutes, longest first (make test runs whole modules on parallel
#: workers; see pytest_collection_modifyitems).
LONG_MODULES = [
    "tests/slurm/test_cluster.py",
    "tests/sequence/test_sequence_workflow.py",
    "tests/wsi/test_wsi_workflow.py",
    "tests/distance/test_distance_workflow.py",
    "tests/flip/test_flip_workflow.py",
    "tests/watermark/test_watermark_workflow.py",
    "tests/distance/test_distance_variants.py",
    "tests/test_variant_report.py",
    "tests/lsf/test_lsf.py",
    "tests/sites/test_htcondor_k8s.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long modules first, each but the first two followed by a quick one.

    ``make test``'s xdist (``--dist loadfile``) hands out modules by test count, most first,
    and keeps this order among modules with equal counts, so the one-test end-to-end modules
    come last in this order. Measured on 2 cores: in this order they ran one after another on
    one worker while the other ran the rest (45:30 in all); in alphabetical order the wsi and
    sequence ones ran side by side at the end, each about twice as slow (979 s and 856 s
    against 424 s and 457 s; 53:03 in all). Without xdist only the order changes.
    """
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    long = [m for m in LONG_MODULES if m in modules]
    quick = [m for m in modules if m not in long]
    order = long[:2] + quick[:2]
    quick = quick[2:]
    for module in long[2:]:
        order += [module, *quick[:1]]
        quick = quick[1:]
    items[:] = [item for module in order + quick for item in modules[module]]


def copy_repo(dest: Path, *test_files: str) -> Path:
    """The workflow's files (and the named files under tests/) in ``dest``: DAG tests run
    there so their results never mix with the checkout's."""
    for name in TRACKED:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    for name in test_files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, dest / name)
    return dest


def snakemake_in(
    workdir: Path, configfile: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    """``snakemake --configfile <configfile> <args>`` in a copy of the workflow; a failure
    shows the tails of its output."""
    cmd = [PYTHON, "-m", "snakemake", "--configfile", configfile, *args]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def e2e_runner(configfile: str) -> Callable[..., subprocess.CompletedProcess]:
    """``smk(workdir, *args, check=True)``: snakemake_in with one track's end-to-end config."""

    def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return snakemake_in(workdir, configfile, *args, check=check)

    return smk


def e2e_workdir(configfile: str) -> Callable:
    """A module fixture: a copy of the workflow with ``configfile``'s DAG run to the end."""

    @pytest.fixture(scope="module")
    def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        copy = copy_repo(tmp_path_factory.mktemp("repo"), configfile)
        snakemake_in(copy, configfile, "--cores", "2")
        return copy

    return workdir


def demo_fixtures(track: str, write_demo: Callable, settings: object) -> tuple[Callable, ...]:
    """Session fixtures ``<track>_demo`` (a small demo dataset written once through the library)
    and ``<track>_manifest`` (its manifest.json); assign them to names in a conftest."""

    @pytest.fixture(scope="session", name=f"{track}_demo")
    def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp(f"{track}_demo")
        write_demo(root, settings)
        return root

    @pytest.fixture(scope="session", name=f"{track}_manifest")
    def manifest(request: pytest.FixtureRequest) -> dict:
        root = request.getfixturevalue(f"{track}_demo")
        return json.loads((root / "manifest.json").read_text())

    return demo, manifest


def finish_dag(workdir: Path, *args: str) -> None:
    """Make ``workdir`` look like a checkout after a successful run (``make demo``): every
    output of the DAG exists and is up to date, without running a job. Empty files stand in
    for the outputs; ``--touch`` then dates them in the DAG's order."""
    snakemake = [PYTHON, "-m", "snakemake", "--cores", "1", *args]
    summary = subprocess.run(
        [*snakemake, "--summary"], cwd=workdir, capture_output=True, text=True, check=True
    )
    for line in summary.stdout.splitlines()[1:]:
        path = workdir / line.split("\t", 1)[0]
        if not path.suffix:  # every file output has a suffix: this is a directory() output
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    subprocess.run([*snakemake, "--touch"], cwd=workdir, capture_output=True, check=True)


def history(run_dir: Path) -> list[dict]:
    """The epochs a training run logged to ``history.jsonl`` (one JSON object per line)."""
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_records(results: Path, pattern: str = "*/seed*/metrics.json") -> dict[Path, dict]:
    """Every run's metrics.json under ``results``, parsed, in path order."""
    return {path: json.loads(path.read_text()) for path in sorted(results.glob(pattern))}


def by_experiment(records: Iterable[dict], metric: str) -> dict[str, list[float]]:
    """Each experiment's ``metric``, one value per seed, in record order."""
    values: dict[str, list[float]] = {}
    for record in records:
        values.setdefault(record["experiment"], []).append(record["metrics"][metric])
    return values


def kill_after_epochs(cmd: list[str], run_dir: Path, epochs: int) -> list[dict]:
    """Start a training command, SIGKILL it once ``epochs`` epochs are in its history (as a
    node failure would) and return that history; fails if the run ended first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(history(run_dir)) < epochs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return history(run_dir)


def run_script(*args: str | Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python scripts/...`` from the repository root, as the rules do."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [PYTHON, *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


class _Payload:
    """Unpickling this calls ``os.system``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-shaped checkpoint with the payload where hyper-parameters go."""
    import torch

    torch.save(
        {"epoch": 3, "state_dict": {"w": torch.zeros(2)}, "hyper_parameters": _Payload(marker)},
        path,
    )
    return path


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workflow.distance.demo import DemoSettings, write_demo

    root = tmp_path_factory.mktemp("motsynth")
    write_demo(root, DemoSettings(sequences=5, frames_per_sequence=6, seed=3))
    return root


@pytest.fixture(scope="session")
def prepared(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Index + HDF5 stores of the small demo, built through the library."""
    from workflow.distance.index import build_index
    from workflow.distance.store import extract_split

    out = tmp_path_factory.mktemp("prep")
    tables = {s: out / f"{s}.parquet" for s in ("train", "val", "test")}
    build_index(demo_root, tables, out / "skipped.tsv", INDEX_SETTINGS, "fail")
    paths: dict[str, Path] = {"root": demo_root}
    for split, table in tables.items():
        store = out / f"{split}.h5"
        extract_split(
            table, demo_root, store, out / f"{split}.skipped.tsv", (64, 112), (32, 16), "fail"
        )
        paths[split] = store
        paths[f"{split}_index"] = table
    return paths


def dump(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj))
