"""The NeRF track's extension point, the ``pose`` setting (workflow.nerf.field.PoseCorrection):
the worked example (variants/nerf/se3_pose.py) loads, builds and is SE(3)'s exponential map;
the built-in SO3xR3 is unchanged; a bad plug-in is an error naming its file; the nerfstudio
engine refuses a plug-in; a short run with the plug-in trains and evaluates through it."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import ROOT
from tests.nerf.conftest import demo_scene
from tests.nerf.test_nerf_train import NOISE, SETTINGS
from workflow.common.config import ConfigError, stage_settings
from workflow.common.errors import InputError
from workflow.common.target import RunTarget
from workflow.common.variants import load_variant
from workflow.nerf.builtin import train_builtin
from workflow.nerf.evaluate import evaluate_run, load_run
from workflow.nerf.field import SO3xR3, make_corrections, pose_class
from workflow.nerf.geometry import skew, so3_exp
from workflow.nerf.nerfstudio import check_settings
from workflow.nerf.prepare import prepare
from workflow.nerf.transforms import read_transforms

SPEC = "variants/nerf/se3_pose.py:SE3Correction"


@pytest.fixture(autouse=True)
def in_checkout(monkeypatch):
    monkeypatch.chdir(ROOT)  # a variant's file is relative to the working directory


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, :3, :3] = so3_exp(torch.randn(n, 3, generator=g))
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g)
    return c2w


def hat(twist: torch.Tensor) -> torch.Tensor:
    """se(3) twists (n, 6) -> their 4x4 matrices [[omega^, u], [0, 0]]."""
    out = torch.zeros(len(twist), 4, 4, dtype=twist.dtype)
    out[:, :3, :3], out[:, :3, 3] = skew(twist[:, :3]), twist[:, 3:]
    return out


def test_the_worked_example_is_se3s_exponential_map_in_the_camera_frame():
    cls = load_variant("nerf", "pose", SPEC)
    assert cls.__name__ == "SE3Correction" and pose_class(SPEC) is cls
    corrections = make_corrections({"pose": SPEC}, 5)
    assert isinstance(corrections, cls)
    c2w, index = random_poses(4).double(), torch.tensor([0, 3, 3, 1])
    corrections.double()
    # Zero twists: the given poses, from 4x4 or 3x4 input, and finite gradients there.
    out = corrections(c2w, index)
    assert out.shape == (4, 3, 4)
    torch.testing.assert_close(out, c2w[:, :3])
    torch.testing.assert_close(corrections(c2w[:, :3], index), c2w[:, :3])
    out.sum().backward()
    assert torch.isfinite(corrections.twist.grad).all() and corrections.twist.grad.abs().sum() > 0
    # Non-zero twists: c2w @ expm([[omega^, u], [0, 0]]), a screw (u alone is not the shift).
    with torch.no_grad():
        corrections.twist.copy_(torch.randn(5, 6, dtype=torch.float64) * 0.7)
        corrections.twist[2] = torch.tensor([1e-6, 0, 0, 0.1, 0.2, 0.3])  # the Taylor branch
    for views in (index, torch.tensor([2, 2, 2, 2])):
        twist = corrections.twist.detach()[views]
        expected = (c2w @ torch.linalg.matrix_exp(hat(twist)))[:, :3]
        torch.testing.assert_close(corrections(c2w, views), expected)
    so3xr3 = SO3xR3(5).double()
    so3xr3.delta.data.copy_(corrections.twist.detach())
    assert not torch.allclose(corrections(c2w, index), so3xr3(c2w, index))  # not the built-in


def test_the_builtin_is_so3xr3_by_default_and_unchanged():
    assert stage_settings({}, "nerf_train")["pose"] == "so3xr3"
    assert pose_class("so3xr3") is SO3xR3
    assert type(make_corrections({}, 3)) is SO3xR3  # a checkpoint from before the setting
    corrections = make_corrections({"pose": "so3xr3"}, 3)
    assert list(corrections.state_dict()) == ["delta"]  # older checkpoints' key
    c2w, index = random_poses(3), torch.arange(3)
    torch.testing.assert_close(corrections(c2w, index), c2w[:, :3])
    with torch.no_grad():
        corrections.delta.copy_(torch.tensor([[0.0, 0.0, math.pi / 2, 1.0, 0.0, 0.0]] * 3))
    out = corrections(c2w, index)
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(out[:, :, :3], c2w[:, :3, :3] @ rz, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :, 3], c2w[:, :3, 3] + c2w[:, :3, 0])


def test_a_plugin_that_is_not_a_pose_correction_is_an_error_naming_its_file(tmp_path, monkeypatch):
    # (a subclass without forward: tests/common/test_variant_loading.py, every track)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.py").write_text(
        "from torch import nn\n\n\nclass Other(nn.Module):\n"
        "    def forward(self, c2w, index):\n        return c2w\n"
    )
    with pytest.raises(InputError, match=r"^other.py: Other is not a subclass of "):
        make_corrections({"pose": "other.py:Other"}, 2)


def test_the_nerfstudio_engine_refuses_a_pose_plugin():
    settings = {**stage_settings({}, "nerf_train"), "engine": "nerfstudio", "pose": SPEC}
    with pytest.raises(ConfigError, match=r"^nerf.experiments.x: pose .* builtin engine's"):
        check_settings(settings, "nerf.experiments.x")
    check_settings({**settings, "pose": "so3xr3"}, "nerf.experiments.x")
    check_settings({**settings, "engine": "builtin"}, "nerf.experiments.x")


def test_a_short_run_trains_and_evaluates_through_the_plugin(tmp_path):
    root = demo_scene(tmp_path / "demo", views=8, image_size=16)
    prepare("nerfstudio", root, tmp_path / "prep/transforms.json",
            {"holdout_every": 8, "noise": NOISE})  # fmt: skip
    scene = read_transforms(tmp_path / "prep/transforms.json")
    settings = {**SETTINGS, "pose": SPEC, "steps_per_epoch": 5, "max_epochs": 2, "rays": 64,
                "pose_warmup": 0.0, "test_time": {"steps": 3, "rays": 64, "lr": 0.003}}  # fmt: skip
    train_builtin(scene, settings, RunTarget(tmp_path / "run", tmp_path / "final.ckpt"))
    state = torch.load(tmp_path / "final.ckpt", weights_only=False)["state_dict"]
    assert state["corrections.twist"].shape == (7, 6) and state["corrections.twist"].abs().sum() > 0
    _, poses, meta = load_run(tmp_path / "final.ckpt")
    assert meta["settings"]["pose"] == SPEC
    assert not torch.allclose(poses["refined"], poses["initial"][:, :3])  # the twists applied
    result = evaluate_run(tmp_path / "final.ckpt", scene, 0)
    assert all(math.isfinite(v) for v in result["metrics"].values()), result["metrics"]
