"""A student's variant in the distance track is one file and one config entry: the worked
example (variants/distance/residual_head.py) runs through the real DAG beside DisNet, lands in
the report with its file's hash, reruns alone when its file is edited, and a bad plug-in stops
the workflow before any job with one error naming its file."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.conftest import copy_repo, e2e_runner, run_records

CONFIG = "tests/distance/variants.yaml"
VARIANT = "variants/distance/residual_head.py"
smk = e2e_runner(CONFIG)


def planned_jobs(dry_run_output: str) -> set[tuple[str, str]]:
    """(rule, experiment or '') of every job a dry-run lists."""
    jobs, rule = set(), None
    for line in dry_run_output.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m[1]
            jobs.add((rule, ""))
        elif rule and (m := re.search(r"wildcards: .*experiment=([\w-]+)", line)):
            jobs.discard((rule, ""))
            jobs.add((rule, m[1]))
            rule = None
    return jobs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_repo(tmp_path_factory.mktemp("repo"), CONFIG)
    smk(copy, "--cores", "2")
    return copy


@pytest.mark.slow
def test_the_worked_example_runs_beside_disnet_and_reports_its_file(workdir):
    records = run_records(workdir / "results/distance/demo")
    by_name = {r["experiment"]: r for r in records.values()}
    assert {"disnet", "residual_head", "mean", "pinhole"} == set(by_name)
    variant = by_name["residual_head"]
    digest = hashlib.sha256((workdir / VARIANT).read_bytes()).hexdigest()
    assert variant["variants"] == {
        "model": {"spec": f"{VARIANT}:ResidualHeadDisNet", "file": VARIANT, "sha256": digest}
    }
    assert by_name["disnet"]["variants"] == {}
    # a real network, not a constant: it beats the mean predictor on the planted data
    assert variant["metrics"]["ALE"] < by_name["mean"]["metrics"]["ALE"], by_name
    summary = (workdir / "results/report/summary.md").read_text()
    assert "| residual_head | 1 |" in summary and "| disnet | 1 |" in summary
    assert (
        f"- residual_head: model `{VARIANT}:ResidualHeadDisNet` (sha256 {digest[:12]})" in summary
    )


@pytest.mark.slow
def test_editing_the_variant_reruns_only_its_jobs(workdir):
    assert "Nothing to be done" in smk(workdir, "-n", "--cores", "1").stdout
    path = workdir / VARIANT
    path.write_text(path.read_text().replace("blocks: int = 2", "blocks: int = 3"))
    jobs = planned_jobs(smk(workdir, "-n", "--cores", "1").stdout)
    assert jobs == {
        ("distance_train", "residual_head"),
        ("distance_evaluate", "residual_head"),
        ("distance_figures", ""),  # every run's predictions, the edited one's among them
        ("report", ""),
        ("all", ""),
    }, jobs


def test_a_bad_plugin_stops_the_workflow_naming_its_file(tmp_path):
    workdir = copy_repo(tmp_path, CONFIG)
    (workdir / "variants/distance/no_forward.py").write_text(
        "from workflow.distance.models import DistanceModule\n\n\n"
        "class NoForward(DistanceModule):\n    pass\n"
    )
    config = tmp_path / "bad.yaml"
    bad = {"distance": {"experiments": {"broken": {
        "model": "variants/distance/no_forward.py:NoForward"}}}}  # fmt: skip
    config.write_text(json.dumps(bad))
    result = smk(workdir, "-n", "--cores", "1", "--configfile", CONFIG, str(config), check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: variants/distance/no_forward.py: NoForward does not define forward() "
        "(required of a workflow.distance.models.DistanceModule)"
    ], result.stderr[-3000:]
