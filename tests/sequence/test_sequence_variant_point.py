"""The sequence track's extension point: the Perceiver's cross-attention (``attention``) is a
built-in name or a CrossAttention in a file; the worked example (variants/sequence/
relu_attention.py) loads, builds and reads counts, and a bad plug-in is one error naming its
file."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from workflow.common.config import ConfigError, stage_settings
from workflow.common.errors import InputError
from workflow.common.variants import load_variant
from workflow.sequence.models import (
    ATTENTIONS,
    CrossAttention,
    SigmoidCrossAttention,
    SoftmaxCrossAttention,
    attention_class,
    build_model,
)

ROOT = Path(__file__).resolve().parents[2]
RELU = "variants/sequence/relu_attention.py:ReluCrossAttention"
TINY = {"dim": 8, "latents": 2, "heads": 2, "self_layers": 1, "stem_pool": 4, "dropout": 0.0}


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Specs are relative to the working directory: the repository root, as in the workflow."""
    monkeypatch.chdir(ROOT)
    return ROOT


def tiny_batch(window: int = 64, protein: int = 12, genes: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(1, 24, (genes, protein), generator=g).to(torch.uint8)
    codes[0, protein // 2 :] = 0  # one protein half padding
    dna = torch.nn.functional.one_hot(torch.randint(0, 4, (genes, window), generator=g), 4)
    return {"dna": dna.to(torch.uint8), "data": torch.randn(genes, 8, generator=g),
            "protein": codes}  # fmt: skip


def test_the_worked_example_loads_builds_and_reads_tokens(in_root):
    cls = load_variant("sequence", "attention", RELU)
    assert issubclass(cls, CrossAttention) and attention_class(RELU) is cls
    attention = cls(8, 2, True)
    query, tokens = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    read = attention(query, tokens, padding)
    assert read.shape == (2, 3, 8) and torch.isfinite(read).all()
    assert attention(query, tokens).shape == (2, 3, 8)  # padding None
    # padded tokens are not read: the second gene's read is its first three tokens'
    alone = attention(query[1:], tokens[1:, :3])
    assert torch.allclose(read[1:], alone, atol=1e-6)


def reads_by_matches(attention: CrossAttention, matches: range, n: int = 100) -> list[float]:
    """What a query for e0 reads from n tokens of which k are e0 (the rest e1), per k."""
    match, other = torch.eye(4)[0], torch.eye(4)[1]
    reads = []
    for k in matches:
        tokens = torch.stack([match] * k + [other] * (n - k))[None]
        with torch.no_grad():
            reads.append(float(attention(match[None, None], tokens)[0, 0, 0]))
    return reads


def test_relu_reads_count_matching_tokens_as_sigmoid_does_and_softmax_does_not(in_root):
    eye, zero = torch.eye(4), torch.zeros(4)
    relu, sigmoid = attention_class(RELU)(4, 1), SigmoidCrossAttention(4, 1)
    softmax = SoftmaxCrossAttention(4, 1)
    with torch.no_grad():  # query = token, key = 8 x token (score 4 for a match), value = token
        for a in (relu, sigmoid):
            a.query.weight.copy_(eye), a.query.bias.zero_()
            a.key_value.weight.copy_(torch.cat([8 * eye, eye])), a.key_value.bias.zero_()
        mha = softmax.attention
        mha.in_proj_weight.copy_(torch.cat([eye, 8 * eye, eye])), mha.in_proj_bias.zero_()
        for out in (relu.out, sigmoid.out, mha.out_proj):
            out.weight.copy_(eye), out.bias.copy_(zero)
    for attention, linear in ((relu, True), (sigmoid, True), (softmax, False)):
        steps = np.diff(reads_by_matches(attention, range(5)))
        assert (steps > 0).all(), (attention, steps)
        assert (steps[-1] / steps[0] > 0.9) == linear, (attention, steps)
    # a token that does not match weighs 0 under ReLU: with no match there is nothing to read
    assert reads_by_matches(relu, range(1))[0] == 0.0


@pytest.mark.parametrize("attention", [*ATTENTIONS, RELU])
@pytest.mark.parametrize("task", ["mrna", "protein", "joint"])
def test_every_attention_trains_in_the_perceiver(in_root, attention, task):
    net = build_model(
        {"model": "perceiver_lsai", "task": task, "attention": attention, **TINY}, 64, 12
    )
    assert all(isinstance(r.cross, CrossAttention) for r in (net.read_dna, net.read_protein) if r)
    out = net(tiny_batch())
    assert out.shape == (3,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_built_ins_are_cross_attentions_by_name():
    assert ATTENTIONS == {"softmax": SoftmaxCrossAttention, "sigmoid": SigmoidCrossAttention}
    assert all(attention_class(name) is cls for name, cls in ATTENTIONS.items())
    with pytest.raises(ValueError, match="attention must be one of"):
        attention_class("relu")


def test_a_softmax_checkpoint_from_before_the_extension_point_still_loads():
    settings = {"model": "perceiver_lsai", "task": "joint", "attention": "softmax", **TINY}
    net = build_model(settings, 64, 12)
    old = {k.replace(".cross.attention.", ".cross."): v for k, v in net.state_dict().items()}
    assert old.keys() != net.state_dict().keys()
    fresh = build_model(settings, 64, 12)
    fresh.load_state_dict(copy.deepcopy(old))  # strict: every key matched
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_plugin_without_forward_is_one_error_naming_its_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("no_forward.py").write_text(
        "from workflow.sequence.models import CrossAttention\n\n\n"
        "class NoForward(CrossAttention):\n    pass\n"
    )
    message = (
        "no_forward.py: NoForward does not define forward() "
        "(required of a workflow.sequence.models.CrossAttention)"
    )
    with pytest.raises(InputError) as err:
        load_variant("sequence", "attention", "no_forward.py:NoForward")
    assert str(err.value) == message
    with pytest.raises(InputError) as err:  # the model builder goes through the same check
        build_model(
            {"model": "perceiver_lsai", "task": "mrna", "attention": "no_forward.py:NoForward"},
            64, 12,
        )  # fmt: skip
    assert str(err.value) == message


def test_the_schema_takes_a_built_in_or_a_variant_spec():
    for value in ("softmax", "sigmoid", RELU):
        assert stage_settings({"attention": value}, "sequence_train")["attention"] == value
    assert stage_settings({}, "sequence_train")["attention"] == "sigmoid"  # today's default
    with pytest.raises(ConfigError, match="attention"):
        stage_settings({"attention": "relu"}, "sequence_train")
