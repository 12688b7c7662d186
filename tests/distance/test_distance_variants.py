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
        elif rule and (m := re.search(r"wildcards: .*experiment=([\w/-]+)", line)):
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
    provenance = next(line for line in summary.splitlines() if line.startswith("- residual_head:"))
    assert provenance.endswith(f"; model `{VARIANT}:ResidualHeadDisNet` (sha256 {digest[:12]})")


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


def write_group(workdir: Path, name: str, experiments: dict) -> None:
    (workdir / "groups" / f"{name}.yaml").write_text(
        json.dumps({"distance": {"experiments": experiments}})
    )


@pytest.mark.slow
def test_groups_run_in_their_own_folders_beside_the_shared_baseline(workdir):
    """Two groups on one checkout: each group's runs in its own folder, DisNet (the baseline)
    and the data preparation shared, and one report of both groups with each row's
    provenance."""
    spec = f"{VARIANT}:ResidualHeadDisNet"
    write_group(workdir, "alice", {"residual_head": {"model": spec, "seeds": [0]}})
    write_group(workdir, "bob", {"small": {"model": "disnet", "lr": 0.001, "seeds": [0]}})
    plan = planned_jobs(smk(workdir, "-n", "--cores", "1", "--config", "group=bob").stdout)
    # nothing shared runs again: not the data, not the baseline, not the other groups' runs
    assert plan == {("distance_train", "bob/small"), ("distance_evaluate", "bob/small"),
                    ("report", ""), ("all", "")}, plan  # fmt: skip
    smk(workdir, "--cores", "2", "--config", "group=alice,bob")
    demo = workdir / "results/distance/demo"
    for group, experiment in (("alice", "residual_head"), ("bob", "small")):
        record = json.loads((demo / group / experiment / "seed0/metrics.json").read_text())
        assert record["experiment"] == f"{group}/{experiment}"
    report = workdir / "results/report/alice+bob/summary.md"
    text = report.read_text()
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| disnet", "| alice/residual_head", "| bob/small"], rows
    assert "Baseline: `disnet`" in text
    digest = hashlib.sha256((workdir / VARIANT).read_bytes()).hexdigest()[:12]
    provenance = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- ")}
    assert f"model `{spec}` (sha256 {digest})" in provenance["- alice/residual_head"]
    for row in ("- disnet", "- alice/residual_head", "- bob/small"):
        assert re.search(r": commit [0-9a-f]{12}|: commit unknown", provenance[row]), provenance
        assert re.search(r", config [0-9a-f]{12}", provenance[row]), provenance
    # the shared report is untouched by the groups' runs
    assert "alice" not in (workdir / "results/report/summary.md").read_text()


def test_a_bad_group_file_stops_the_workflow_naming_it(tmp_path):
    workdir = copy_repo(tmp_path, CONFIG)
    write_group(workdir, "carol", {"typo": {"model": "disnet", "hiddn": 32}})
    result = smk(workdir, "-n", "--cores", "1", "--config", "group=carol", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(
        "error: groups/carol.yaml: distance.experiments.typo: unknown key hiddn"
    ), result.stderr[-3000:]
    result = smk(workdir, "-n", "--cores", "1", "--config", "group=dave", check=False)
    assert "error: groups/dave.yaml: no such file" in result.stderr, result.stderr[-3000:]
