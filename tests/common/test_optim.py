"""The optimiser pieces every track's training shares (workflow/common/optim.py)."""

import pytest
import torch

from workflow.common.optim import adamw_warmup_cosine, no_decay, warmup_cosine


def test_warmup_cosine_ramps_then_decays_to_zero() -> None:
    factor = warmup_cosine(10, 110)
    assert [factor(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    after = [factor(s) for s in range(10, 111)]
    assert after[0] == pytest.approx(1.0)
    assert after[50] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert after[-1] == pytest.approx(0.0, abs=1e-12)
    assert factor(500) == pytest.approx(0.0, abs=1e-12)


def test_no_decay_spares_biases_and_norms() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decays = {name: not no_decay(name, p) for name, p in net.named_parameters()}
    assert decays == {"0.weight": True, "0.bias": False, "1.weight": False, "1.bias": False}


def test_adamw_decays_weights_only_and_steps_the_schedule() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    answer = adamw_warmup_cosine(net, lr=0.1, weight_decay=0.05, warmup_steps=2, total_steps=4)
    optimizer, schedule = answer["optimizer"], answer["lr_scheduler"]["scheduler"]
    decay, plain = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert (
        decay["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0 and len(plain["params"]) == 3
    )
    assert answer["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # warm-up (s + 1) / 2 at steps 0, 1; then 0.5 (1 + cos(pi (s - 2) / 2)) at steps 2, 3
    assert rates == pytest.approx([0.05, 0.1, 0.1, 0.05], abs=1e-12)
