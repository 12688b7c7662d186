"""The scaffold's budgets and checkpoint cadence: runs cut by steps or samples, last.ckpt
inside an epoch by steps and by time, the default cadence per resource class."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch.utils.data import TensorDataset

from workflow.common.checkpoint import load_checkpoint
from workflow.common.loaders import resumable_loader
from workflow.common.resources import checkpoint_minutes, with_checkpoint_default
from workflow.common.training import TrainSettings, fit, step_budget


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x).squeeze(1), y)

    def validation_step(self, batch, _):
        self.log("val_loss", self.training_step(batch, 0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Data(L.LightningDataModule):
    def __init__(self, n: int = 80, batch: int = 8) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, 4, generator=generator)
        self.data, self.batch = TensorDataset(x, x.sum(1)), batch

    def train_dataloader(self):
        return resumable_loader(self.data, self.batch)

    def val_dataloader(self):
        return resumable_loader(self.data, self.batch, shuffle=False)


QUIET = {"enable_model_summary": False, "logger": False}


def run(tmp_path, **settings) -> L.Trainer:
    result = fit(Tiny(), Data(), TrainSettings(run_dir=tmp_path, trainer_overrides=QUIET,
                                               **{"max_epochs": 5, **settings}))  # fmt: skip
    return load_checkpoint(result.best_checkpoint.parent / "last.ckpt")


def test_a_sample_budget_cuts_the_run_at_whole_global_batches(tmp_path):
    assert step_budget(TrainSettings(run_dir=tmp_path, max_epochs=1, max_samples=50,
                                     batch_size=8), world_size=1) == 7  # fmt: skip
    assert step_budget(TrainSettings(run_dir=tmp_path, max_epochs=1, max_samples=50,
                                     batch_size=8), world_size=4) == 2  # fmt: skip
    assert step_budget(TrainSettings(run_dir=tmp_path, max_epochs=1, max_samples=50,
                                     max_steps=3, batch_size=8), world_size=1) == 3  # fmt: skip
    last = run(tmp_path, max_samples=100, batch_size=8)  # 13 steps: inside the 2nd epoch
    assert last["global_step"] == 13
    assert last["position"] == {"epoch": 1, "step": 13, "mid_epoch": True}


def test_last_checkpoint_inside_an_epoch_by_steps_and_by_time(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lsai.training"):
        run(tmp_path / "steps", max_epochs=1, checkpoint_every_steps=3)
    steps = [r.getMessage() for r in caplog.records if "inside epoch" in r.getMessage()]
    assert [m.split()[3] for m in steps] == ["3", "6", "9"]  # not 10: the epoch's end saves
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lsai.training"):
        run(tmp_path / "time", max_epochs=1, checkpoint_every_minutes=1e-9)
    timed = [r.getMessage() for r in caplog.records if "inside epoch" in r.getMessage()]
    assert len(timed) == 9  # every step but the last is past the (tiny) interval
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lsai.training"):
        run(tmp_path / "none", max_epochs=1)
    assert not [r for r in caplog.records if "inside epoch" in r.getMessage()]


def test_the_default_cadence_is_a_quarter_of_the_class_runtime_within_5_to_30_min():
    assert [checkpoint_minutes(m) for m in (10, 60, 100, 720)] == [5.0, 15.0, 25.0, 30.0]
    site = {"classes": {"GPU_1": {"runtime": 40}}}
    assert with_checkpoint_default({"resources": "GPU_1"}, site)["checkpoint_every_minutes"] == 10
    assert with_checkpoint_default({"resources": "GPU_1"})["checkpoint_every_minutes"] == 30
    kept = {"resources": "GPU_1", "checkpoint_every_minutes": 2.0}
    assert with_checkpoint_default(kept, site) == kept
    assert with_checkpoint_default({"lr": 1}) == {"lr": 1}  # no training class: untouched


def test_the_leonardo_gpu_classes_checkpoint_every_30_min():
    from tests.conftest import ROOT
    from workflow.common.resources import load_site

    site = load_site([ROOT / "profiles/leonardo/resources.yaml"], environ={})
    for name in ("GPU_1", "GPU_NODE_DDP", "GPU_MULTINODE_DDP"):
        settings = with_checkpoint_default({"resources": name}, site)
        assert settings["checkpoint_every_minutes"] == 30.0
        assert settings["checkpoint_every_minutes"] < site["classes"][name]["runtime"]


@pytest.mark.parametrize("world", [1, 2])
def test_a_sample_budget_needs_the_batch_size(tmp_path, world):
    with pytest.raises(ValueError, match="batch_size"):
        step_budget(TrainSettings(run_dir=tmp_path, max_epochs=1, max_samples=5), world)
