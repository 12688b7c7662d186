"""Camelyon16's FROC and the lesion evaluation mask on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.wsi.froc import (
    detections,
    froc_curve,
    froc_score,
    grid_local_maxima,
    score_detections,
)
from workflow.wsi.lesions import evaluation_mask


def lesion_map(shape, *boxes):
    """int32 labels: box k (r0, r1, c0, c1) is lesion k + 1 (evaluation-mask pixels)."""
    out = np.zeros(shape, np.int32)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        out[r0:r1, c0:c1] = k + 1
    return out


def test_hits_false_positives_and_itc():
    # two lesions at downsample 32: lesion 1 covers pixels rows 0-1, cols 0-1 (level-0
    # x, y in [0, 64)); lesion 2 rows 5-6, cols 5-6 ([160, 224)); lesion 2 is an ITC
    evaluation = lesion_map((10, 10), (0, 2, 0, 2), (5, 7, 5, 7))
    points = [(10, 10), (50, 40), (300, 300), (170, 200), (63, 63)]
    scores = [0.2, 0.7, 0.9, 0.95, 0.1]
    out = score_detections(points, scores, evaluation, itc=[2], downsample=32)
    # (300, 300) is outside: the one false positive; (170, 200) lies in the ITC: nothing
    assert out.false_positives.tolist() == [0.9]
    assert out.lesion_scores.tolist() == [0.7]  # lesion 1's best hit; lesion 2 not counted
    normal = score_detections(points, scores, None)
    assert normal.false_positives.tolist() == scores and normal.lesion_scores.size == 0


def test_froc_on_a_hand_computed_curve():
    # 2 slides: slide A has lesions L1 (best hit 0.9), L2 (0.4), L3 (missed) and false
    # positives 0.8, 0.3; slide B is normal with false positives 0.6, 0.2.
    a = score_detections(
        [(16, 16), (16, 16), (80, 16), (500, 500), (600, 600)],
        [0.9, 0.5, 0.4, 0.8, 0.3],
        lesion_map((40, 40), (0, 1, 0, 1), (0, 1, 2, 3), (5, 6, 5, 6)),
    )
    b = score_detections([(1, 1), (2, 2)], [0.6, 0.2], None)
    assert a.false_positives.tolist() == [0.8, 0.3] and np.isneginf(a.lesion_scores[2])
    fp, sens = froc_curve([a, b])
    # thresholds high to low: 0.9 (0 FP, 1/3), 0.8 (1 FP -> 0.5/slide, 1/3), 0.6 (2 -> 1,
    # 1/3), 0.4 (2 -> 1, 2/3), 0.3 (3 -> 1.5, 2/3), 0.2 (4 -> 2, 2/3); per rate the best
    assert fp.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert sens == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    score, at = froc_score(fp, sens)
    # at 0.25: 1/3; 0.5: 1/3; 1: 2/3; 2, 4, 8: 2/3 (the curve's last value holds)
    assert at == pytest.approx({0.25: 1 / 3, 0.5: 1 / 3, 1.0: 2 / 3, 2.0: 2 / 3, 4.0: 2 / 3,
                                8.0: 2 / 3})  # fmt: skip
    assert score == pytest.approx((2 / 3 + 4 * 2 / 3) / 6)


def test_froc_interpolates_between_operating_points():
    # one tumour slide, 1 lesion hit at 0.5; false positives 0.9 and 0.1, two slides
    tumour = score_detections([(0, 0), (900, 900), (990, 990)], [0.5, 0.9, 0.1],
                              lesion_map((32, 32), (0, 1, 0, 1)))  # fmt: skip
    normal = score_detections([], [], None)
    fp, sens = froc_curve([tumour, normal])
    # 0.9: 0.5 FP/slide, sens 0; 0.5: 0.5, 1; 0.1: 1.0, 1  -> (0, 0), (0.5, 1), (1, 1)
    assert fp.tolist() == [0.0, 0.5, 1.0] and sens.tolist() == [0.0, 1.0, 1.0]
    score, at = froc_score(fp, sens)
    assert at[0.25] == pytest.approx(0.5)  # halfway from (0, 0) to (0.5, 1)
    assert score == pytest.approx((0.5 + 5 * 1.0) / 6)


def test_a_perfect_detector_scores_one_and_no_lesion_is_an_error():
    perfect = score_detections([(0, 0)], [1.0], lesion_map((4, 4), (0, 1, 0, 1)))
    assert froc_score(*froc_curve([perfect]))[0] == 1.0
    with pytest.raises(ValueError, match="no lesion"):
        froc_curve([score_detections([(0, 0)], [1.0], None)])


def test_evaluation_mask_dilates_fills_and_flags_itc():
    # 10 um pixels: dilation 37.5 um = 3.75 px; ITC below a 275 um major axis
    mask = np.zeros((120, 120), bool)
    mask[10:12, 10:12] = True  # 20 um lesion: grown to ~ 2 + 2 * 3.75 px -> ~95 um: ITC
    mask[60:100, 30:34] = True  # two bars 8 px apart: their middle pixels are 4 px from both
    mask[60:100, 42:46] = True
    ring = np.zeros((120, 120), bool)
    ring[30:56, 80:106] = True
    ring[34:52, 84:102] = False  # a hole, filled by the evaluation mask
    lesions, itc = evaluation_mask(mask | ring, pixel_um=10.0)
    labels = {
        int(lesions[11, 11]),
        int(lesions[80, 31]),
        int(lesions[80, 44]),
        int(lesions[40, 90]),
    }
    assert len(labels) == 4 and 0 not in labels
    assert itc == [int(lesions[11, 11])]
    assert lesions[40, 90] == lesions[31, 81]  # the ring's hole is filled
    # dilation: 3 px beyond the border is in (< 3.75), 4 px is out
    assert lesions[10, 7] == lesions[11, 11] and lesions[10, 6] == 0
    # bars 6 px apart merge: every gap pixel is at most 3 px from one of them
    bar = np.pad(np.ones((40, 4), bool), 20)
    merged, _ = evaluation_mask(bar | np.roll(bar, 10, axis=1), pixel_um=10.0)
    assert merged.max() == 1


def test_detections_are_grid_local_maxima_scaled_by_the_slide_probability():
    # 3 x 2 tiles of 256 px; attention peaks at (0, 0) and (512, 256)
    coords = np.array([(0, 0), (256, 0), (512, 0), (0, 256), (256, 256), (512, 256)])
    attention = np.array([0.4, 0.1, 0.1, 0.1, 0.1, 0.2])
    assert grid_local_maxima(coords, attention, 256).tolist() == [1, 0, 0, 0, 0, 1]
    points, scores, relative = detections(coords, 256, attention, probability=0.5)
    assert points.tolist() == [[128, 128], [640, 384]]
    assert scores == pytest.approx([0.5, 0.25]) and relative.max() == 1.0


def test_the_roc_figure_gains_a_froc_panel_where_runs_have_lesions(tmp_path):
    """Runs whose metrics.json hold FROC sensitivities get a second panel (mean over seeds);
    runs without lesions keep the single ROC panel."""
    import pandas as pd
    from PIL import Image

    from workflow.common.metrics import RunMetrics, write_metrics
    from workflow.wsi.plots import froc_points, roc_figure

    paths = []
    for experiment, seed, at in [("dasmil", 0, 0.9), ("dasmil", 1, 0.7), ("abmil", 0, None)]:
        folder = tmp_path / experiment / f"seed{seed}"
        folder.mkdir(parents=True)
        frame = pd.DataFrame({"slide_id": ["a", "b"], "label": [0, 1], "prob": [0.2, 0.8]})
        frame.to_parquet(folder / "predictions.parquet")
        extra = {"froc_sensitivity": {"0.25": at / 2, "8": at}} if at else {}
        run = RunMetrics("wsi", "d", experiment, seed, {"AUC": 1.0}, {"AUC": True}, "h",
                         extra=extra)  # fmt: skip
        write_metrics(folder / "metrics.json", run)
        paths.append(folder / "predictions.parquet")
    froc = froc_points(paths)
    assert list(froc) == ["dasmil"]
    assert froc["dasmil"][8.0].mean() == pytest.approx(0.8)
    predictions = {"dasmil": frame, "abmil": frame}
    roc_figure(predictions, tmp_path / "both.png", froc)
    roc_figure(predictions, tmp_path / "roc.png", froc_points(paths[2:]))
    wide, narrow = (Image.open(tmp_path / n).size for n in ("both.png", "roc.png"))
    assert wide[0] > 1.8 * narrow[0] and abs(wide[1] - narrow[1]) < 20  # one row of panels
