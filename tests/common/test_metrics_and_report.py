import json
import math

import pytest

from workflow.common.errors import InputError
from workflow.common.metrics import RunMetrics, read_metrics, write_metrics
from workflow.common.report import build_report


def write_run(folder, experiment, seed, ale, alp, settings=None):
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
            extra={"settings": settings or {}},
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


def test_report_mean_sd_interval_and_best(tmp_path):
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
    # two seeds: t(0.975, 1 df) = tan(0.475 pi), times sd / sqrt(2)
    half = math.tan(0.475 * math.pi) * math.sqrt(2.0) / math.sqrt(2)
    assert row.loc[("disnet", "ALE"), "ci_low"] == pytest.approx(2.0 - half)
    assert row.loc[("disnet", "ALE"), "ci_high"] == pytest.approx(2.0 + half)
    assert math.isnan(row.loc[("mean", "ALE"), "ci_low"])  # one seed: no interval
    assert bool(row.loc[("disnet", "ALE"), "best"])  # lower is better
    assert not bool(row.loc[("mean", "ALE"), "best"])
    assert bool(row.loc[("mean", "ALP@1m"), "best"])  # higher is better
    # the highest mean is data in the CSV, not a mark: no baseline, nothing is bold
    assert "| disnet | 2 | 2 ± 1.4 [-10.7, 14.7] | 0.5 ± 0.14 [-0.771, 1.77] | - |" in md
    assert "No baseline set for this track: nothing is tested." in md
    assert "## distance / demo" in md


def t_test_p_two_df(differences: list[float]) -> float:
    """Two-sided p of a paired t-test over three seeds, from the closed form of Student's t
    CDF with 2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    n = len(differences)
    assert n == 3
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    t = abs(mean / (sd / math.sqrt(n)))
    return 1 - t / math.sqrt(2 + t * t)


def test_a_variant_is_marked_only_where_the_paired_test_says_so(tmp_path):
    baseline = [5.0, 6.0, 7.0]  # ALE per seed: the seeds' spread (sd 1) hides small effects
    runs = {
        "consistent": [4.0, 4.9, 6.2],  # 0.8-1.1 m better on every seed
        "lucky": [2.5, 8.0, 4.5],  # the lowest mean (5.0 m), but 2 m worse on one seed
        "worse": [5.5, 6.6, 7.4],  # 0.4-0.6 m worse on every seed
    }
    files = [write_run(tmp_path, "disnet", s, ale, 0.5) for s, ale in enumerate(baseline)]
    for name, ales in runs.items():
        files += [write_run(tmp_path, name, s, ale, 0.5) for s, ale in enumerate(ales)]
    summary, md = build_report(files, {"distance": "disnet"})
    ale = summary[summary["metric"] == "ALE"].set_index("experiment")
    for name, ales in runs.items():
        expected = t_test_p_two_df([a - b for a, b in zip(ales, baseline, strict=True)])
        assert ale.loc[name, "p_value"] == pytest.approx(expected, rel=1e-6), name
        assert ale.loc[name, "paired_seeds"] == 3
    assert ale["verdict"].to_dict() == {
        "disnet": "", "consistent": "better", "lucky": "", "worse": "worse"}  # fmt: skip
    assert ale.loc["lucky", "mean"] < ale.loc["consistent", "mean"]  # best mean, yet not marked
    assert bool(ale.loc["lucky", "best"])
    lines = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert "**5.03 ± 1.1" in lines["| consistent"]
    assert "**" not in lines["| lucky"] and "▼" not in lines["| lucky"]
    assert "▼" in lines["| worse"] and "**" not in lines["| disnet"]
    # equal ALP on every seed: no difference, no mark
    assert not summary[summary["metric"] == "ALP@1m"]["verdict"].any()
    assert "Baseline: `disnet`; paired over 3 seeds." in md


def test_no_test_without_two_common_seeds_or_a_baseline_run(tmp_path):
    files = [
        write_run(tmp_path, "disnet", 0, 5.0, 0.5),
        write_run(tmp_path, "disnet", 1, 6.0, 0.5),
        write_run(tmp_path, "variant", 1, 1.0, 0.9),  # one seed shared: no test
        write_run(tmp_path, "variant", 2, 1.1, 0.9),
    ]
    summary, md = build_report(files, {"distance": "disnet"})
    variant = summary[(summary["experiment"] == "variant") & (summary["metric"] != "ALE_0-10m")]
    assert (variant["paired_seeds"] == 1).all() and not variant["verdict"].any()
    assert variant["p_value"].isna().all()
    assert "no experiment shares two seeds with it: nothing is tested" in md
    _, md = build_report(files[2:], {"distance": "disnet"})
    assert "Baseline `disnet` did not run here: nothing is tested." in md


def test_a_run_of_another_task_is_not_tested_against_the_baseline(tmp_path):
    mrna = {"task": "mrna"}
    files = [write_run(tmp_path, "perceiver", s, 5.0 + s, 0.5, mrna) for s in range(3)]
    files += [write_run(tmp_path, "xpresso", s, 6.0 + s, 0.4 + s / 10, mrna) for s in range(3)]
    files += [
        write_run(tmp_path, "protein", s, 1.0 + s / 10, 0.9, {"task": "protein"}) for s in range(3)
    ]
    summary, _ = build_report(files, {"distance": "perceiver"})
    ale = summary[summary["metric"] == "ALE"].set_index("experiment")
    assert ale.loc["xpresso", "paired_seeds"] == 3  # 1 m worse on every seed: no spread
    assert ale.loc["protein", "paired_seeds"] == 0 and ale.loc["protein", "verdict"] == ""


def test_a_table_of_one_experiment_bolds_nothing(tmp_path):
    summary, md = build_report([write_run(tmp_path, "kgw", 0, 1.0, 0.6)])
    assert not summary["best"].any()
    assert "**" not in md.split("\n", 3)[-1]  # the legend above the tables may say **bold**
