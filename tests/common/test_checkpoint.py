"""Checkpoints are data, never code: a pickle that asks to run something is refused with
``error: <path>: ...`` before anything it names is called, on every path that reads one."""

from __future__ import annotations

import pickle

import pytest
import torch

from tests.conftest import malicious_checkpoint, run_script
from workflow.common.checkpoint import load_checkpoint, load_weights
from workflow.common.errors import InputError
from workflow.common.target import RunTarget


def test_the_payload_runs_under_a_plain_unpickler(tmp_path):
    """The fixture is real: without the safe path the marker is created."""
    marker = tmp_path / "RAN"
    torch.load(malicious_checkpoint(tmp_path / "x.ckpt", marker), weights_only=False)
    assert marker.exists()


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "RAN"
    path = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(InputError, match="refused: the checkpoint asks to run or build") as err:
        load_checkpoint(path)
    assert err.value.path == str(path)
    assert "posix.system" in err.value.problem
    with pytest.raises(InputError, match="refused"):
        load_weights(path)
    assert not marker.exists()


def test_a_plain_pickle_and_a_non_dict_are_input_errors(tmp_path):
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(InputError, match="safe loader refuses"):
        load_checkpoint(plain)
    torch.save({"state_dict": {"w": "not a tensor"}}, tmp_path / "odd.pt")
    with pytest.raises(InputError, match="not a state dict of tensors"):
        load_weights(tmp_path / "odd.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "bare.pt")
    assert set(load_weights(tmp_path / "bare.pt")) == {"w"}


def test_a_resume_from_a_malicious_last_checkpoint_runs_nothing(prepared, tmp_path):
    """A crafted ``last.ckpt`` left in a run folder: the resume refuses it."""
    from workflow.common.config import stage_settings
    from workflow.distance.train import train_experiment

    marker = tmp_path / "RAN"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    malicious_checkpoint(run_dir / "checkpoints" / "last.ckpt", marker)
    settings = stage_settings({"model": "disnet", "max_epochs": 1}, "distance_train")
    final = tmp_path / "final.ckpt"
    with pytest.raises(InputError, match="refused"):
        train_experiment(settings, prepared["train"], prepared["val"], RunTarget(run_dir, final))
    assert not marker.exists()
    assert not final.exists()


def test_an_evaluate_stage_refuses_a_malicious_checkpoint(prepared, tmp_path):
    """By hand, as the issue found: ``evaluate --checkpoint evil.ckpt`` runs nothing."""
    marker = tmp_path / "RAN"
    path = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    result = run_script(
        "scripts/distance.py", "evaluate", "--checkpoint", path,
        "--test-store", prepared["test"], "--settings", '{"model": "disnet"}',
        "--metrics", tmp_path / "m.json", "--predictions", tmp_path / "p.parquet",
        "--dataset", "d", "--experiment", "e", check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: refused"), last
    assert not marker.exists()
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "p.parquet").exists()
