"""The six worked plug-in variants (variants/<track>/, one per track) in one report built by the
real DAG: ``snakemake --config group=example`` on every track at once (tests/variants_all.yaml,
every demo near its schema minimum) runs groups/example.yaml's experiments under
results/<track>/<dataset>/example/ beside the shared baselines, and
results/report/example/summary.md shows each track's baseline and example rows, each example
with its spec and its file's hash. What the runs learn is the per-track e2e tests' business."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_repo, e2e_runner, run_records

CONFIG = "tests/variants_all.yaml"
GROUP = "example"
DATASET = "demo"
TRACKS = ("distance", "wsi", "sequence", "flip", "watermark", "nerf")
VARIANT = re.compile(r"^([^:\s]+\.py):[A-Za-z_]\w*$")  # `<file>.py:<Class>`
smk = e2e_runner(CONFIG)


def group_examples() -> dict[str, tuple[str, dict[str, str]]]:
    """Track -> (experiment, {setting: spec}) of groups/example.yaml: one worked example each."""
    group = yaml.safe_load((ROOT / "groups" / f"{GROUP}.yaml").read_text())
    examples = {}
    for track, section in group.items():
        (name, settings), *others = section["experiments"].items()
        assert not others, f"groups/{GROUP}.yaml: one example per track, {track} has more"
        specs = {k: v for k, v in settings.items() if isinstance(v, str) and VARIANT.match(v)}
        examples[track] = (name, specs)
    return examples


def baselines() -> dict[str, str]:
    """Track -> baseline experiment: the schema's defaults, then the configs' own."""
    schema = yaml.safe_load((ROOT / "config/schema/config.yaml").read_text())
    names = {t: p["default"] for t, p in schema["properties"]["baselines"]["properties"].items()}
    for config in ("config/config.yaml", CONFIG):
        names.update((yaml.safe_load((ROOT / config).read_text()) or {}).get("baselines") or {})
    return names


EXAMPLES = group_examples()
BASELINES = baselines()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_repo(tmp_path_factory.mktemp("repo"), CONFIG)
    smk(copy, "--cores", "2", "--config", f"group={GROUP}")
    return copy


def tables(summary: str) -> dict[str, list[str]]:
    """Heading (``<track> / <dataset>``) -> the experiments of its table's rows, in order."""
    out: dict[str, list[str]] = {}
    heading = None
    for line in summary.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            out[heading] = []
        elif heading and line.startswith("| ") and not line.startswith("| experiment |"):
            out[heading].append(line.split(" | ")[0][2:])
    return out


def sha256(workdir: Path, file: str) -> str:
    return hashlib.sha256((workdir / file).read_bytes()).hexdigest()


def test_the_group_names_one_variant_per_track():
    assert set(EXAMPLES) == set(TRACKS), EXAMPLES
    assert all(specs for _, specs in EXAMPLES.values()), EXAMPLES


@pytest.mark.slow
def test_the_report_has_each_track_s_baseline_and_example_rows_only(workdir):
    summary = (workdir / f"results/report/{GROUP}/summary.md").read_text()
    expected = {
        f"{track} / {DATASET}": [BASELINES[track], f"{GROUP}/{EXAMPLES[track][0]}"]
        for track in TRACKS
    }
    assert tables(summary) == expected, summary
    for track in TRACKS:
        assert f"Baseline: `{BASELINES[track]}`" in summary, summary


@pytest.mark.slow
@pytest.mark.parametrize("track", TRACKS)
def test_each_example_names_its_spec_and_file_hash(workdir, track):
    name, specs = EXAMPLES[track]
    experiment = f"{GROUP}/{name}"
    digests = {key: sha256(workdir, VARIANT.match(spec)[1]) for key, spec in specs.items()}
    summary = (workdir / f"results/report/{GROUP}/summary.md").read_text()
    provenance = {
        line.split(":")[0][2:]: line for line in summary.splitlines() if line.startswith("- ")
    }
    line = provenance[experiment]
    head = rf"- {re.escape(experiment)}: commit ([0-9a-f]{{12}}|unknown), config [0-9a-f]{{12}};"
    assert re.match(head, line), line
    for key, spec in specs.items():
        assert f"; {key} `{spec}` (sha256 {digests[key][:12]})" in line, line
    assert ";" not in provenance[BASELINES[track]], provenance  # a built-in: no variant file

    run = workdir / f"results/{track}/{DATASET}/{GROUP}/{name}/seed0/metrics.json"
    record = json.loads(run.read_text())
    assert record["experiment"] == experiment
    assert record["variants"] == {
        key: {"spec": spec, "file": VARIANT.match(spec)[1], "sha256": digests[key]}
        for key, spec in specs.items()
    }
    assert record["metrics"], record
    for metric, value in record["metrics"].items():
        if value is not None:
            assert isinstance(value, int | float) and not isinstance(value, bool), (metric, value)
            assert math.isfinite(value), (metric, value)


@pytest.mark.slow
def test_group_runs_in_the_group_folder_and_baselines_in_the_shared_ones(workdir):
    for track in TRACKS:
        demo = workdir / "results" / track / DATASET
        runs = run_records(demo, "**/seed*/metrics.json")
        name, _ = EXAMPLES[track]
        assert {p.relative_to(demo).as_posix(): r["experiment"] for p, r in runs.items()} == {
            f"{GROUP}/{name}/seed0/metrics.json": f"{GROUP}/{name}",
            f"{BASELINES[track]}/seed0/metrics.json": BASELINES[track],
        }, track
    report = workdir / "results/report"
    assert not (report / "summary.md").exists() and not (report / "summary.csv").exists()
    assert sorted(p.name for p in report.iterdir()) == [GROUP]
