"""FLIP models: offline construction, patch masking, transforms and tokenizer."""

from __future__ import annotations

import pytest
import torch

from workflow.common.errors import InputError
from workflow.flip.model import build_clip, image_transforms, set_mask_ratio, tokenizer


def test_flip_tiny_builds_offline_with_paper_text_length():
    model = build_clip({"model": "flip-tiny"})
    tokens = tokenizer({"model": "flip-tiny"})(["a red circle on a green background"])
    assert tokens.shape == (1, 32)
    assert int((tokens > 0).sum()) == 9  # start, 7 words, end: the bundled BPE vocab works
    out = model(torch.zeros(2, 3, 64, 64), tokens.repeat(2, 1))
    assert out["image_features"].shape == (2, 64)
    assert out["text_features"].shape == (2, 64)


def test_vit_b16_builds_without_weights():
    model = build_clip({"model": "ViT-B-16", "mask_ratio": 0.5})
    assert model.visual.output_dim == 512
    assert model.text_projection.shape == (512, 512)
    assert model.context_length == 32
    assert model.visual.patch_dropout.prob == 0.5


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="unknown open_clip model"):
        build_clip({"model": "ViT-Q-99"})
    with pytest.raises(InputError, match="mask_ratio"):
        build_clip({"mask_ratio": 1.0})


def tokens_seen(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Sequence length entering the vision transformer (class token included)."""
    seen: list[int] = []
    hook = model.visual.transformer.register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[1])
    )
    try:
        with torch.no_grad():
            model.encode_image(images)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("mask", [0.0, 0.5, 0.75])
def test_patch_dropout_encodes_only_visible_tokens_in_training(mask: float):
    model = build_clip({"model": "flip-tiny", "mask_ratio": mask})
    images = torch.randn(2, 3, 64, 64)
    patches = (64 // 8) ** 2
    model.train()
    assert tokens_seen(model, images) == 1 + int(patches * (1 - mask))
    model.eval()
    assert tokens_seen(model, images) == 1 + patches


def test_set_mask_ratio_switches_masking_of_a_built_model():
    model = build_clip({"model": "flip-tiny", "mask_ratio": 0.75}).train()
    set_mask_ratio(model, 0.0)
    assert tokens_seen(model, torch.randn(1, 3, 64, 64)) == 1 + 64
    set_mask_ratio(model, 0.5)
    assert tokens_seen(model, torch.randn(1, 3, 64, 64)) == 1 + 32


def test_transforms_match_the_model_input(flip_demo):
    from PIL import Image

    model = build_clip({"model": "flip-tiny"})
    train, val = image_transforms(model)
    image = Image.new("RGB", (100, 80), (200, 30, 30))
    assert train(image).shape == val(image).shape == (3, 64, 64)
    first = next((flip_demo / "val").glob("*/*.jpg"))
    a, b = val(Image.open(first)), val(Image.open(first))
    assert torch.equal(a, b)  # eval transform is deterministic
