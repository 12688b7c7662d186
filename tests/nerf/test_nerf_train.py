"""The builtin engine's parts, and a run resuming from its last checkpoint (the refinement's
must-show numbers are asserted on the demo DAG, tests/nerf/test_nerf_workflow.py)."""

import numpy as np
import pytest
import torch

from tests.nerf.conftest import demo_scene
from workflow.common.config import stage_settings
from workflow.common.errors import InputError
from workflow.common.target import RunTarget
from workflow.nerf.builtin import train_builtin
from workflow.nerf.evaluate import evaluate_run
from workflow.nerf.field import RadianceField, box_interval, coarse_to_fine
from workflow.nerf.prepare import prepare
from workflow.nerf.transforms import read_transforms

NOISE = {"rotation_deg": 8.0, "translation": 0.01, "seed": 1}
SETTINGS = {**stage_settings({}, "nerf_train"), "steps_per_epoch": 40, "max_epochs": 4,
            "test_time": {"steps": 40, "rays": 512, "lr": 0.003}}  # fmt: skip


def test_coarse_to_fine_weights_fade_bands_in_order():
    np.testing.assert_allclose(coarse_to_fine(0.0, 4), [0, 0, 0, 0])
    np.testing.assert_allclose(coarse_to_fine(0.5, 4), [1, 1, 0, 0])
    np.testing.assert_allclose(coarse_to_fine(0.625, 4), [1, 1, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(coarse_to_fine(None, 4), [1, 1, 1, 1])


@pytest.mark.parametrize("encoding", ["grid", "frequency"])
def test_both_encodings_give_density_and_colour(encoding):
    field = RadianceField(encoding=encoding)
    density, colour = field(torch.rand(5, 7, 3) * 2 - 1, progress=0.3)
    assert density.shape == (5, 7) and colour.shape == (5, 7, 3)
    assert (density >= 0).all() and ((colour >= 0) & (colour <= 1)).all()


def test_rays_enter_and_leave_the_box():
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far = box_interval(origins, dirs)
    assert near[0] == pytest.approx(2.0) and far[0] == pytest.approx(4.0)
    assert near[1] >= far[1]  # a miss


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    root = demo_scene(tmp_path / "demo", views=8, image_size=16)
    prepare("nerfstudio", root, tmp_path / "prep/transforms.json",
            {"holdout_every": 8, "noise": NOISE})  # fmt: skip
    scene = read_transforms(tmp_path / "prep/transforms.json")
    short = {**SETTINGS, "steps_per_epoch": 5, "max_epochs": 2, "rays": 64}
    run = tmp_path / "run"
    train_builtin(scene, short, RunTarget(run, tmp_path / "first.ckpt"))
    # Same run folder, more epochs (as after a kill): training continues from epoch 2.
    train_builtin(scene, {**short, "max_epochs": 3}, RunTarget(run, tmp_path / "final.ckpt"))
    info = torch.load(tmp_path / "final.ckpt", weights_only=False)["run_info"]
    assert info["resumed_from_epoch"] == 1
    assert [h["step"] for h in info["history"]] == [5, 10, 15]


def test_a_checkpoint_of_another_kind_is_an_input_error(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(InputError, match="not a builtin NeRF checkpoint"):
        evaluate_run(path, None, 0)
