import json
import math

import pytest

from workflow.common.errors import InputError
from workflow.common.metrics import RunMetrics, read_metrics, write_metrics
from workflow.common.report import build_report


def write_run(folder, experiment, seed, ale, alp):
    path = folder / experiment / f"seed{seed}" / "metrics.json"
    write_metrics(
        path,
        RunMetrics(
            track="distance",
            dataset="demo",
            experiment=experiment,
            seed=seed,
            metrics={"ALE": ale, "ALP@1m": alp, "ALE_0-10m": float("nan")},
            higher_is_better={"ALE": False, "ALP@1m": True, "ALE_0-10m": False},
            config_hash="abc",
        ),
    )
    return path


def test_metrics_file_has_provenance_and_nulls_nan(tmp_path):
    path = write_run(tmp_path, "disnet", 0, 1.5, 0.4)
    record = read_metrics(path)
    assert record["metrics"]["ALE_0-10m"] is None
    for key in ("git_commit", "packages", "device", "config_hash", "wall_time_s", "world_size"):
        assert key in record
    assert "torch" in record["packages"]


def test_metrics_need_direction():
    with pytest.raises(ValueError, match="higher_is_better"):
        RunMetrics(
            track="t",
            dataset="d",
            experiment="e",
            seed=0,
            metrics={"x": 1.0},
            higher_is_better={},
            config_hash="h",
        )


def test_read_metrics_rejects_damage(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"schema": 1, "track": ')
    with pytest.raises(InputError, match="malformed JSON"):
        read_metrics(bad)
    bad.write_text(json.dumps({"schema": 1, "track": "t"}))
    with pytest.raises(InputError, match="missing keys"):
        read_metrics(bad)


def test_report_mean_sd_and_best(tmp_path):
    files = [
        write_run(tmp_path, "disnet", 0, 1.0, 0.6),
        write_run(tmp_path, "disnet", 1, 3.0, 0.4),
        write_run(tmp_path, "mean", 0, 10.0, 0.9),
    ]
    summary, md = build_report(files)
    row = summary.set_index(["experiment", "metric"])
    assert row.loc[("disnet", "ALE"), "mean"] == pytest.approx(2.0)
    assert row.loc[("disnet", "ALE"), "sd"] == pytest.approx(math.sqrt(2.0))
    assert row.loc[("disnet", "ALE"), "seeds"] == 2
    assert bool(row.loc[("disnet", "ALE"), "best"])  # lower is better
    assert not bool(row.loc[("mean", "ALE"), "best"])
    assert bool(row.loc[("mean", "ALP@1m"), "best"])  # higher is better
    assert "| disnet | 2 | **2 ± 1.4** |" in md
    assert "## distance / demo" in md


def test_a_table_of_one_experiment_bolds_nothing(tmp_path):
    summary, md = build_report([write_run(tmp_path, "kgw", 0, 1.0, 0.6)])
    assert not summary["best"].any()
    assert "**" not in md.split("\n", 3)[-1]  # the legend above the tables may say **bold**
