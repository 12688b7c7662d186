"""A tiny demo LM shared by the watermark tests: trained in seconds, published as a folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from workflow.common.target import RunTarget
from workflow.watermark.corpus import documents
from workflow.watermark.hf import load_lm
from workflow.watermark.lm import train_lm

#: A model small enough to train in seconds; the watermark only needs it to spread its bets.
TINY = {
    "vocab_size": 512, "n_layer": 1, "n_head": 2, "n_embd": 64, "block_size": 128,
    "batch_size": 8, "lr": 5e-3, "warmup_steps": 5, "val_fraction": 0.1,
}  # fmt: skip


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Other test workers share the machine; one thread also keeps results reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, one_thread: None):
    """(model, tokenizer, folder) of a 2-epoch tiny LM loaded back from its HF folder."""
    root = tmp_path_factory.mktemp("tiny_lm")
    train_lm(
        documents(60, seed=3), {**TINY, "max_epochs": 2}, RunTarget(root / "run", root / "model")
    )
    model, tokenizer = load_lm(root / "model")
    return model, tokenizer, root / "model"
