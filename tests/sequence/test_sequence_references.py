"""The published models - DNAPerceiver (workflow/sequence/dnaperceiver.py) and Xpresso - and the
optimiser settings that reproduce their training: Adam, betas, a constant rate, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.sequence.synthetic import LENGTH, PROTEIN, encoded_fixture
from workflow.common.target import RunTarget
from workflow.sequence.data import GeneSplit
from workflow.sequence.models import build_model

encoded = encoded_fixture((200, 60, 60))

#: Name -> shape of every tensor in the state dict of the reference's ``DNAPerceiver`` as its
#: main_DNAPerceiver.py builds it (defaults: 32-wide embedding, 128 x 128 latents, depth 1,
#: 64-wide queries, attention pool 12, window 3000-13500), written out by running the
#: reference's models/perceiver.py (github.com/MatteoStefanini/DNAPerceiver) once.
REFERENCE = json.loads((Path(__file__).with_name("dnaperceiver_reference_shapes.json")).read_text())
SMALL = {  # a window of LENGTH (400 bp) needs a pool of at most 7 to keep a tower position
    "embedding": 8, "latents": 4, "latent_dim": 16, "latent_heads": 2, "cross_dim_head": 8,
    "queries_dim": 8, "attention_pool": 4, "dropout": 0.0,
}  # fmt: skip


def test_layers_and_parameter_count_are_the_references():
    net = build_model({"model": "dnaperceiver"}, 10_500, 0)
    ours = {name: list(t.shape) for name, t in net.state_dict().items()}
    assert ours == REFERENCE  # same names (a reference state dict loads as it is), same shapes
    assert sum(p.numel() for p in net.parameters()) == 785_453


def keras_params(window: int, filters=(128, 32), kernels=(6, 9), pools=(30, 10),
                 dense=(64, 2), half_life=8) -> int:  # fmt: skip
    """Parameters of Xpresso's Keras model (Conv1D 'same' + MaxPooling1D, Flatten, Concatenate
    with the half-life features, Dense layers, Dense(1)), counted from Keras' layer formulas."""
    total, channels, length = 0, 4, window
    for f, k, pool in zip(filters, kernels, pools, strict=True):
        total += channels * k * f + f  # Conv1D: kernel + bias; 'same' keeps the length
        channels, length = f, length // pool  # MaxPooling1D, 'valid': floor
    width = channels * length + half_life
    for units in (*dense, 1):
        total += width * units + units
        width = units
    return total


def test_xpresso_is_the_keras_model_layer_for_layer():
    net = build_model({"model": "xpresso"}, 10_500, 0)  # the schema's defaults: the paper's
    assert sum(p.numel() for p in net.parameters()) == keras_params(10_500) == 112_485
    head = [type(m).__name__ for m in net.head]
    assert head == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [m.p for m in net.head if isinstance(m, torch.nn.Dropout)] == pytest.approx(
        [0.000992864149624538, 0.015461061523035332]
    )  # tpe_1K_10epochs_optimized_0to20K.hyperopt's best trial
    # Keras' 'same' for the even kernel 6 pads 2 left and 3 right (TF's padding rule)
    conv = net.dna.net[0]
    x = torch.randn(2, 4, 300)
    padded = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x, (2, 3)), conv.weight, conv.bias
    )  # fmt: skip
    assert torch.allclose(conv(x), padded, atol=1e-6)
    # glorot: conv weights N(0, 2 / (fan_in + fan_out)), dense U(+-sqrt(6 / (fan_in + fan_out)))
    big = build_model({"model": "xpresso", "xpresso_filters": [512, 32]}, 10_500, 0)
    w = big.dna.net[0].weight  # 512 x 4 x 6: fan_in 24, fan_out 3072
    assert float(w.std()) == pytest.approx((2 / (24 + 512 * 6)) ** 0.5, rel=0.02)
    dense = big.head[0].weight  # 64 x (35 * 32 + 8)
    assert float(dense.abs().max()) <= (6 / (1128 + 64)) ** 0.5
    assert float(dense.abs().max()) > 0.95 * (6 / (1128 + 64)) ** 0.5
    assert all(float(m.bias.abs().max()) == 0 for m in big.modules() if hasattr(m, "bias")
               and isinstance(m, (torch.nn.Conv1d, torch.nn.Linear)))  # fmt: skip
    linear = build_model({"model": "xpresso", "xpresso_last_relu": False}, 10_500, 0)
    assert [type(m).__name__ for m in linear.head][3:5] == ["Linear", "Dropout"]


def small_batch(encoded: Path) -> dict[str, torch.Tensor]:
    split = GeneSplit(encoded / "valid.h5", "mrna", [])
    return torch.utils.data.default_collate([split[i] for i in range(4)])


def test_every_parameter_learns_and_n_bases_are_masked(encoded):
    net = build_model({"model": "dnaperceiver", "dnaperceiver": SMALL}, LENGTH, PROTEIN)
    batch = small_batch(encoded)
    batch["dna"][:, 50:90] = 0  # a run of N
    out = net(batch)
    assert out.shape == (4,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.eval()
    with torch.no_grad():
        before = net(batch)
        # (random shifts: a constant one would vanish in the context's layer norm)
        net.token_emb.weight[0] += torch.randn(8)  # the N / padding token is never attended to
        net.pos_emb.weight[50:90] += torch.randn(40, 8)
        assert torch.equal(net(batch), before)
        net.token_emb.weight[1] += torch.randn(8)  # an A is
        assert not torch.allclose(net(batch), before)


def test_dnaperceiver_serves_the_mrna_task_only():
    with pytest.raises(ValueError, match="mrna task only"):
        build_model({"model": "dnaperceiver", "task": "protein"}, LENGTH, PROTEIN)


def test_adam_constant_rate_and_early_stopping(encoded, tmp_path):
    """A rate far below float32's resolution leaves the weights, hence val_r2, unchanged:
    patience 2 stops the run after epoch 3 of 20, and the checkpoint holds Adam with the
    given betas at the constant rate."""
    from workflow.sequence.train import train_experiment

    settings = {
        "model": "xpresso", "task": "mrna", "max_epochs": 20, "batch_size": 50, "window": [],
        "xpresso_pools": [10, 4], "optimizer": "adam", "betas": [0.9, 0.98], "lr": 1e-30,
        "weight_decay": 0.02, "schedule": "constant", "patience": 2,
    }  # fmt: skip
    final = tmp_path / "final.ckpt"
    train_experiment(settings, encoded, RunTarget(tmp_path / "run", final))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 2  # epochs 0, 1, 2 ran: 1 and 2 did not beat epoch 0
    assert state["lr_schedulers"] == []
    group = state["optimizer_states"][0]["param_groups"][0]
    assert tuple(group["betas"]) == (0.9, 0.98) and group["lr"] == 1e-30
    assert group["weight_decay"] == 0.02 and group["decoupled_weight_decay"] is False  # L2


def test_trials_publish_the_best_initialisation(encoded, tmp_path):
    """``trials: 3`` trains three initialisations in their own folders and publishes the one
    with the best val_r2, recording every trial's score."""
    from workflow.common.training import checkpoint_run_info
    from workflow.sequence.train import train_experiment

    settings = {
        "model": "xpresso", "task": "mrna", "max_epochs": 2, "batch_size": 50, "window": [],
        "xpresso_pools": [10, 4], "optimizer": "adam", "schedule": "constant", "trials": 3,
    }  # fmt: skip
    final = tmp_path / "final.ckpt"
    train_experiment(settings, encoded, RunTarget(tmp_path / "run", final))
    info = checkpoint_run_info(final)
    scores = info["trial_val_r2"]
    assert len(scores) == 3 and info["trial"] == max(range(3), key=scores.__getitem__)
    trial = info["trial"]
    best = torch.load(tmp_path / "run" / f"trial{trial}" / "checkpoints" / "best.ckpt",
                      weights_only=False)  # fmt: skip
    published = torch.load(final, weights_only=False)
    assert all(torch.equal(published["state_dict"][k], v) for k, v in best["state_dict"].items())
    # the trials start from different weights
    first = [
        torch.load(tmp_path / "run" / f"trial{k}" / "checkpoints" / "last.ckpt",
                   weights_only=False)["state_dict"]["model.head.0.weight"]
        for k in range(3)
    ]  # fmt: skip
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
