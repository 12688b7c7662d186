"""The frozen encoder: loaded weights are used as they are, and the feature width recorded for
a scale without tiles is the model's real output width."""

from __future__ import annotations

import pytest
import timm
import torch

from workflow.wsi.features import build_encoder, feature_width


def _plain(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=0).eval()


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "resnet10t"])
def test_feature_width_is_the_output_width(name):
    encoder = build_encoder({"encoder": name, "seed": 0})
    with torch.inference_mode():
        out = encoder(torch.zeros(1, 3, 64, 64))
    assert feature_width(encoder) == out.shape[1]  # MobileNetV3: 1024, not num_features 288
