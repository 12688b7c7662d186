"""The FLIP comparison: paired differences to mask 0 with their interval, and the counted cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow.flip.compare import (
    bootstrap_means,
    comparison_table,
    finding,
    markdown,
    paired_interval,
)
from workflow.flip.model import image_tower_gflops
from workflow.flip.plots import mask_ratio_figure

IMAGES = [f"val/c{i % 10}/{i:04d}.jpg" for i in range(400)]


def predictions(correct: np.ndarray) -> pd.DataFrame:
    labels = [name.split("/")[1] for name in IMAGES]
    guesses = [label if ok else "wrong" for label, ok in zip(labels, correct, strict=True)]
    return pd.DataFrame({"image": IMAGES, "label": labels, "zero_shot": guesses, "score": 0.0})


def record(experiment: str, seed: int, ratio: float, top1: float, gflops: float) -> dict:
    metrics = {"zeroshot_top1": top1, "zeroshot_top5": 0.8, "probe_top1": 0.5}
    return {
        "experiment": experiment, "seed": seed, "extra": {"mask_ratio": ratio},
        "metrics": {**metrics, "image_gflops": gflops},
    }  # fmt: skip


def test_identical_models_differ_by_nothing_with_a_zero_width_interval():
    right = predictions(np.arange(400) % 2 == 0)
    out = paired_interval([right], [right])
    assert out["delta_top1"] == out["ci_low"] == out["ci_high"] == 0.0
    assert out["paired_seeds"] == 1 and out["val_images"] == 400


def test_the_interval_covers_a_planted_difference_and_pairs_images_not_rows():
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.5
    better = base | (rng.random(400) < 0.2)  # right wherever base is, and on ~10% more
    shuffled = predictions(better).sample(frac=1.0, random_state=1)  # row order must not matter
    out = paired_interval([predictions(base)], [shuffled])
    planted = better.mean() - base.mean()
    assert out["delta_top1"] == pytest.approx(planted)
    assert out["ci_low"] < planted < out["ci_high"] and out["ci_low"] > 0  # every pair helps


def test_several_seeds_add_students_t_and_keep_the_wider_interval():
    rng = np.random.default_rng(2)
    refs = [rng.random(400) < 0.5 for _ in range(3)]
    # one seed better, one worse: the seeds disagree more than the images do
    others = [refs[0] | (rng.random(400) < 0.3), refs[1] & (rng.random(400) < 0.7), refs[2]]
    one_way = paired_interval([predictions(r) for r in refs], [predictions(o) for o in others])
    per_seed = np.array([o.mean() - r.mean() for r, o in zip(refs, others, strict=True)])
    assert one_way["delta_top1"] == pytest.approx(per_seed.mean())
    assert one_way["delta_sd"] == pytest.approx(per_seed.std(ddof=1))
    half = 4.302652729911275 * per_seed.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    # the seeds disagree by far more than the image bootstrap's width: t's interval is kept
    assert one_way["ci_low"] == pytest.approx(per_seed.mean() - half)
    assert one_way["ci_high"] == pytest.approx(per_seed.mean() + half)
    assert "t over 3 seeds" in one_way["ci_method"]


def test_the_table_pairs_by_seed_and_states_the_finding():
    rng = np.random.default_rng(3)
    runs = {("clip", s): rng.random(400) < 0.5 for s in (0, 1)}
    runs[("flip50", 0)] = runs[("clip", 0)]
    runs[("flip50", 1)] = runs[("clip", 1)]
    records = [record("clip", s, 0.0, runs[("clip", s)].mean(), 0.2) for s in (0, 1)]
    records += [record("flip50", s, 0.5, runs[("flip50", s)].mean(), 0.1) for s in (0, 1)]
    table = comparison_table(records, {k: predictions(v) for k, v in runs.items()})
    assert list(table["experiment"]) == ["clip", "flip50"] and list(table["seeds"]) == [2, 2]
    flip = table.iloc[1]
    assert flip["cost_ratio"] == pytest.approx(0.5) and flip["delta_top1"] == 0.0
    assert finding(flip).startswith("mask 0.5 is within 0.0 points of mask 0")
    assert finding(flip).endswith("at 0.50x the image-tower cost per sample")
    text = markdown(table)
    assert "| clip | 0 | 2 |" in text and "reference" in text and "- mask 0.5 is within" in text
    unpaired = comparison_table(records[2:], {})  # no mask-0 run: nothing to pair with
    assert "delta_top1" not in unpaired and unpaired["cost_ratio"].isna().all()


def test_a_loss_variant_is_paired_with_the_builtin_loss_at_its_mask_ratio():
    """A plug-in loss changes the objective, not the masking: its delta is against the
    built-in loss at the same mask, and a mask-0 variant does not displace the reference."""
    rng = np.random.default_rng(5)
    runs = {(name, 0): rng.random(400) < 0.5 for name in ("clip", "flip50", "cy50", "cy0")}
    runs[("cy50", 0)] = runs[("flip50", 0)] | (rng.random(400) < 0.2)  # the loss helps
    spec = "variants/flip/cyclip.py:CyclipLoss"
    records = [record("clip", 0, 0.0, 0.5, 0.2), record("flip50", 0, 0.5, 0.5, 0.1),
               record("cy50", 0, 0.5, 0.6, 0.1), record("cy0", 0, 0.0, 0.5, 0.2)]  # fmt: skip
    for r in records[2:]:
        r["extra"]["loss"] = spec
    table = comparison_table(records, {k: predictions(v) for k, v in runs.items()})
    table = table.set_index("experiment")
    assert list(table.index) == ["clip", "cy0", "flip50", "cy50"]  # by mask, built-in first
    assert table.loc["flip50", "reference"] == "clip" and table.loc["cy0", "reference"] == "clip"
    cy50 = table.loc["cy50"]
    assert cy50["reference"] == "flip50" and cy50["loss"] == spec
    planted = runs[("cy50", 0)].mean() - runs[("flip50", 0)].mean()
    assert cy50["delta_top1"] == pytest.approx(planted) and cy50["ci_low"] > 0
    assert finding(cy50).startswith("loss CyclipLoss at mask 0.5 is within")
    text = markdown(table.reset_index())
    assert "| clip | 0 | 1 | clip |" in text and "| cy50 | 0.5 | 1 | CyclipLoss |" in text
    assert "of flip50 (loss clip, same mask)" in text and "- mask 0.5 is within" in text


def test_masking_cuts_the_counted_image_tower_cost_in_proportion():
    cost = {r: image_tower_gflops({"model": "flip-tiny", "mask_ratio": r}) for r in (0, 0.5, 0.75)}
    assert cost[0.0] == image_tower_gflops({"model": "flip-tiny", "mask_ratio": 0})  # counted
    assert cost[0.5] == image_tower_gflops({"model": "flip-tiny"})  # the schema's default, 0.5
    assert 0.45 < cost[0.5] / cost[0.0] < 0.55  # the visible half of the patches
    assert 0.22 < cost[0.75] / cost[0.0] < 0.30  # patch embedding still sees every patch


def test_the_figure_draws_the_paired_difference_against_the_cost(tmp_path):
    rng = np.random.default_rng(4)
    runs = {("clip", 0): rng.random(400) < 0.5, ("flip50", 0): rng.random(400) < 0.5}
    records = [
        record("clip", 0, 0.0, runs[("clip", 0)].mean(), 0.2),
        record("flip50", 0, 0.5, runs[("flip50", 0)].mean(), 0.1),
    ]
    for r, speed in zip(records, (100.0, 190.0), strict=True):
        r["extra"]["images_per_s"] = speed
    table = comparison_table(records, {k: predictions(v) for k, v in runs.items()})
    mask_ratio_figure(records, tmp_path / "fig.png", chance=0.1, comparison=table)
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_without_a_mask_0_experiment_the_table_has_accuracies_only():
    """A config running masked experiments only (the test cluster's one DDP run) still gets
    its figures: nothing is paired, nothing is claimed."""
    right = predictions(np.arange(400) % 2 == 0)
    table = comparison_table([record("mask50", 0, 0.5, 0.5, 1.0)], {("mask50", 0): right})
    assert table["zeroshot_top1_mean"].tolist() == [0.5]
    assert "delta_top1" not in table and table["cost_ratio"].isna().all()
    text = markdown(table)
    assert "| mask50 | 0.5 | 1 |" in text and "within" not in text


def test_blocked_bootstrap_draws_what_one_call_draws():
    """Resampling in blocks (to bound memory at ImageNet's size) changes no number."""
    values = np.random.default_rng(3).normal(size=257)
    whole = values[np.random.default_rng(9).integers(257, size=(1000, 257))].mean(axis=1)
    blocked = bootstrap_means(values, 1000, np.random.default_rng(9), block=64)
    assert np.array_equal(blocked, whole)
