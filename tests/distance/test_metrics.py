"""Metric values against a four-object example worked out by hand."""

import math

import pytest

from workflow.distance.metrics import distance_metrics, higher_is_better

TRUE = [5.0, 15.0, 25.0, 40.0]
PRED = [6.0, 15.0, 20.0, 44.0]  # errors 1, 0, 5, 4
OCCLUSION = [0.1, 0.4, 0.6, 0.9]


def test_hand_computed_values():
    m = distance_metrics(TRUE, PRED, OCCLUSION)
    assert m["ALE"] == pytest.approx(2.5)
    assert m["ALE_0-10m"] == 1 and m["ALE_10-20m"] == 0
    assert m["ALE_20-30m"] == 5 and m["ALE_30-100m"] == 4
    assert m["ALP@0.5m"] == 0.25 and m["ALP@1m"] == 0.5 and m["ALP@2m"] == 0.5
    assert m["ALOE_0-0.3"] == 1 and m["ALOE_0.3-0.5"] == 0
    assert m["ALOE_0.5-0.75"] == 5 and m["ALOE_0.75-1"] == 4
    assert m["AbsRel"] == pytest.approx((0.2 + 0 + 0.2 + 0.1) / 4)
    assert m["SqRel"] == pytest.approx((0.2 + 0 + 1.0 + 0.4) / 4)
    assert m["RMSE"] == pytest.approx(math.sqrt(42 / 4))
    logs = [math.log(6 / 5), 0.0, math.log(20 / 25), math.log(44 / 40)]
    assert m["RMSE_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 4))
    # ratio 1.25 is not < 1.25: the third object fails the first threshold
    assert m["delta<1.25^1"] == 0.75 and m["delta<1.25^2"] == 1 and m["delta<1.25^3"] == 1


def test_empty_bin_is_nan_and_perfect_prediction():
    m = distance_metrics([50.0, 60.0], [50.0, 60.0])
    assert math.isnan(m["ALE_0-10m"])
    assert m["ALE"] == 0 and m["RMSE_log"] == 0 and m["delta<1.25^1"] == 1
    assert "ALOE_0-0.3" not in m


def test_directions_and_shape_check():
    assert higher_is_better("ALP@1m") and higher_is_better("delta<1.25^2")
    assert not higher_is_better("ALE") and not higher_is_better("RMSE_log")
    with pytest.raises(ValueError):
        distance_metrics([1.0, 2.0], [1.0])
