"""The reproduction check: its tolerances against simulation, and the stage end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workflow.common.metrics import RunMetrics, write_metrics
from workflow.wsi.reproduce import acc_standard_error, auc_standard_error, compare

ROOT = Path(__file__).resolve().parents[2]


def empirical_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of each row's positives against its negatives (no ties with continuous scores)."""
    return (pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))


@pytest.mark.parametrize("auc", [0.967, 0.85])
def test_auc_standard_error_matches_the_spread_of_simulated_test_sets(auc):
    """Hanley & McNeil's formula is exact for exponential scores: positives ~ Exp(rate r),
    negatives ~ Exp(1) give AUC = 1 / (1 + r). 4000 test sets of Camelyon16's size (49 / 81)."""
    rng = np.random.default_rng(0)
    rate = 1.0 / auc - 1.0
    pos = rng.exponential(1.0 / rate, size=(4000, 49))
    neg = rng.exponential(1.0, size=(4000, 81))
    spread = empirical_auc(pos, neg).std()
    assert auc_standard_error(auc, 49, 81) == pytest.approx(spread, rel=0.08)


def test_acc_standard_error_and_the_verdict():
    assert acc_standard_error(0.945, 130) == pytest.approx(0.019995, abs=1e-6)
    labels = np.array([1] * 49 + [0] * 81)
    near = [{"ACC": 0.93, "AUC": 0.95}, {"ACC": 0.92, "AUC": 0.96}]
    rows = {r.metric: r for r in compare(near, {"ACC": 0.945, "AUC": 0.967}, labels)}
    assert rows["ACC"].mean == pytest.approx(0.925) and rows["ACC"].seeds == 2
    assert rows["ACC"].reproduced and rows["AUC"].reproduced  # within ~0.040 and ~0.037
    far = compare([{"ACC": 0.85}], {"ACC": 0.945}, labels)[0]
    assert not far.reproduced and far.sd == 0.0
    with pytest.raises(ValueError, match="both classes"):
        compare(near, {"ACC": 0.945}, np.ones(10))


def run_files(tmp_path: Path, values: list[dict[str, float]]) -> list[Path]:
    labels = [1] * 20 + [0] * 30
    paths = []
    for seed, metrics in enumerate(values):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        pd.DataFrame(
            {
                "slide_id": [f"s{i}" for i in range(50)],
                "label": labels,
                "prob": np.linspace(0, 1, 50),
            }
        ).to_parquet(folder / "predictions.parquet")
        run = RunMetrics(
            "wsi", "camelyon16", "dasmil", seed, metrics, {k: True for k in metrics}, "abc"
        )
        write_metrics(folder / "metrics.json", run)
        paths.append(folder / "metrics.json")
    return paths


def reproduce(paths: list[Path], out: Path, published: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "wsi.py"),
            "reproduce",
            "--metrics",
            *map(str, paths),
            "--out",
            str(out),
            "--settings",
            json.dumps(published),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_stage_writes_the_table_and_names_a_run_without_the_metric(tmp_path):
    paths = run_files(tmp_path, [{"AUC": 0.95, "ACC": 0.9}, {"AUC": 0.97, "ACC": 0.7}])
    out = tmp_path / "reproduction.md"
    published = {
        "experiment": "dasmil",
        "metrics": {"AUC": 0.967, "ACC": 0.945},
        "source": "the paper",
    }
    done = reproduce(paths, out, published)
    assert done.returncode == 0, done.stderr
    table = out.read_text()
    assert "| AUC | 0.967 | 0.960 ± 0.014 | 2 |" in table and "| yes |" in table
    assert "| ACC | 0.945 | 0.800 ± 0.141 | 2 |" in table and "| no |" in table
    assert "Test slides: 50 (20 positive)" in table and "the paper" in table
    (tmp_path / "bad").mkdir()
    bad = run_files(tmp_path / "bad", [{"ACC": 0.9}])
    done = reproduce(bad, tmp_path / "x.md", published)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"error: {bad[0]}: no AUC among its metrics" in done.stderr
    assert not (tmp_path / "x.md").exists()
