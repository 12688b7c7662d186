"""The scatter figure's r^2 is the summary's: the mean over runs of each run's r^2."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.sequence.plots import r2_label, run_r2, scatter_figure


def two_runs() -> pd.DataFrame:
    """Two folds that each fit well but sit at different offsets, so pooling them reads lower."""
    rng = np.random.default_rng(0)
    parts = []
    for run, offset in (("seed0", 0.0), ("seed1", 3.0)):
        label = rng.normal(size=200)
        prediction = label + rng.normal(scale=0.5, size=200) + offset
        parts.append(pd.DataFrame({"label": label, "prediction": prediction, "run": run}))
    return pd.concat(parts, ignore_index=True)


def test_run_r2_is_per_run_not_pooled():
    frame = two_runs()
    expected = [
        np.corrcoef(part.label, part.prediction)[0, 1] ** 2 for _, part in frame.groupby("run")
    ]
    pooled = np.corrcoef(frame.label, frame.prediction)[0, 1] ** 2
    got = run_r2(frame)
    assert np.allclose(got, expected)
    assert got.mean() > pooled + 0.2  # the figure used to print the pooled value
    label = r2_label(got)
    assert f"{np.mean(expected):.3f} ± {np.std(expected, ddof=1):.3f} (2 runs)" in label
    assert r2_label(run_r2(frame.drop(columns="run"))) == f"r$^2$ {pooled:.3f}"


def test_scatter_figure_renders(tmp_path):
    frame = two_runs().assign(task="mrna")
    path = tmp_path / "scatter.png"
    scatter_figure({"a": frame, "b": frame, "c": frame}, path, {"mrna": 0.8})
    assert path.stat().st_size > 10_000
