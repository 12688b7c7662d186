"""FLIP's extension point: the training loss (workflow/flip/loss.py FlipLoss). The worked
example (variants/flip/cyclip.py) loads as a plug-in and adds its terms to the CLIP loss; the
built-in `clip` is open_clip's ClipLoss exactly; checkpoint selection stays the plain CLIP loss;
a variant that defines no forward() is refused naming its file."""

from __future__ import annotations

import pytest
import torch
from open_clip.loss import ClipLoss

from workflow.common.errors import InputError
from workflow.common.variants import load_variant
from workflow.flip.loss import FlipLoss, loss_class
from workflow.flip.train import FlipModule, tune_settings

CYCLIP = "variants/flip/cyclip.py:CyclipLoss"
TINY = {"model": "flip-tiny", "mask_ratio": 0.5}

pytestmark = pytest.mark.usefixtures("one_thread")


def features(n: int = 6, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    unit = [torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
            for _ in range(2)]  # fmt: skip
    return unit[0], unit[1]


def test_the_worked_example_loads_and_adds_its_consistency_terms_to_clip():
    cls = load_variant("flip", "loss", CYCLIP)
    assert issubclass(cls, FlipLoss) and loss_class(CYCLIP) is cls
    images, texts = features()
    images.requires_grad_(True)
    scale = torch.tensor(10.0)
    terms = cls()(images, texts, scale, output_dict=True)
    assert set(terms) == {"contrastive_loss", "in_modal_cyclic_loss", "cross_modal_cyclic_loss"}
    assert all(t.shape == () and torch.isfinite(t) for t in terms.values())
    assert torch.equal(terms["contrastive_loss"], ClipLoss()(images, texts, scale))
    assert terms["in_modal_cyclic_loss"] > 0 and terms["cross_modal_cyclic_loss"] > 0
    total = cls()(images, texts, scale)
    assert torch.allclose(total, sum(terms.values()))
    total.backward()
    assert images.grad is not None and images.grad.shape == images.shape
    # the reference's strength: the batch size x the per-pair means
    scaled = type("Scaled", (cls,), {"batch_scaled": True})()
    scaled = scaled(images, texts, scale, output_dict=True)
    for key in ("in_modal_cyclic_loss", "cross_modal_cyclic_loss"):
        assert torch.allclose(scaled[key], len(images) * terms[key])
    # consistent geometry (texts = images) costs nothing more than CLIP
    same = cls()(texts, texts, scale, output_dict=True)
    assert same["in_modal_cyclic_loss"] == 0 and same["cross_modal_cyclic_loss"] < 1e-12


def test_the_builtin_clip_loss_is_open_clips_clip_loss():
    assert loss_class("clip") is FlipLoss
    images, texts = features(seed=1)
    for kwargs in ({}, {"cache_labels": True}):
        assert torch.equal(
            FlipLoss(**kwargs)(images, texts, torch.tensor(20.0)),
            ClipLoss(**kwargs)(images, texts, torch.tensor(20.0)),
        )
    with pytest.raises(InputError, match="unknown loss 'cyclip'"):
        loss_class("cyclip")


def test_a_variant_trains_with_its_loss_and_selects_on_plain_clip():
    torch.manual_seed(0)
    builtin = FlipModule(TINY)
    torch.manual_seed(0)
    variant = FlipModule({**TINY, "loss": CYCLIP})
    # the loss has no weights and draws no random numbers: the same initial model
    assert list(builtin.state_dict()) == list(variant.state_dict())
    pairs = zip(builtin.state_dict().values(), variant.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert type(builtin.train_criterion) is FlipLoss
    assert type(variant.train_criterion).__name__ == "CyclipLoss"
    assert type(builtin.val_criterion) is type(variant.val_criterion) is FlipLoss
    size = builtin.model.visual.preprocess_cfg["size"]
    size = size if isinstance(size, int) else size[0]
    batch = (torch.randn(4, 3, size, size), torch.randint(1, 400, (4, 32)))
    builtin.eval(), variant.eval()
    with torch.no_grad():
        val = [m.contrastive_loss(batch, m.val_criterion) for m in (builtin, variant)]
        assert torch.equal(val[0], val[1])  # val_loss: the same plain CLIP loss
        terms = variant.loss_terms(batch, variant.train_criterion)
        assert len(terms) == 3
        train = variant.contrastive_loss(batch, variant.train_criterion)
        assert torch.allclose(train, sum(terms.values())) and train > val[1]
        assert torch.equal(builtin.contrastive_loss(batch, builtin.train_criterion), val[0])
    # the unmasked tuning phase keeps the experiment's objective
    assert tune_settings({**TINY, "loss": CYCLIP}, {})["loss"] == CYCLIP


def test_a_variant_without_forward_is_refused_naming_its_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no_forward.py").write_text(
        "from workflow.flip.loss import FlipLoss\n\n\nclass NoForward(FlipLoss):\n    pass\n"
    )
    # the error itself, for every track: tests/common/test_variant_loading.py
    with pytest.raises(InputError, match="no_forward.py: NoForward does not define forward"):
        FlipModule({**TINY, "loss": "no_forward.py:NoForward"})
