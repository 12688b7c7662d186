"""DTU, Replica and nerfstudio layouts -> the prepared transforms.json, and their bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.nerf.conftest import demo_scene
from workflow.common.errors import InputError
from workflow.nerf.dtu import decompose_projection, read_dtu
from workflow.nerf.prepare import prepare, read_source
from workflow.nerf.replica import read_trajectory
from workflow.nerf.transforms import Intrinsics, read_transforms

PREPARE = {"holdout_every": 8, "noise": {"rotation_deg": 5.0, "translation": 0.01, "seed": 1},
           "frame_stride": 1, "camera": {"fx": 0, "fy": 0, "cx": 0, "cy": 0, "width": 0,
                                         "height": 0}}  # fmt: skip


def test_projection_decomposes_into_the_camera_it_was_built_from():
    k = np.array([[800.0, 0.5, 320.0], [0, 790.0, 240.0], [0, 0, 1]])
    c2w = np.eye(4)
    angle = 0.4
    c2w[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    c2w[:3, 3] = [0.3, -1.2, 2.5]
    w2c = np.linalg.inv(c2w)
    for scale in (1.0, -2.7):  # a projection is known up to a scale of either sign
        got_k, got = decompose_projection(scale * k @ w2c[:3])
        np.testing.assert_allclose(got_k, k, atol=1e-9)
        np.testing.assert_allclose(got, c2w, atol=1e-9)


def test_singular_projection_is_refused():
    with pytest.raises(ValueError, match="not invertible"):
        decompose_projection(np.array([[1.0, 2, 3, 0], [2, 4, 6, 0], [0, 0, 1, 1]]))


@pytest.mark.parametrize("fmt", ["nerfstudio", "dtu", "replica"])
def test_every_layout_reads_back_the_ground_truth_poses(tmp_path, fmt):
    root = demo_scene(tmp_path / fmt, format=fmt)
    manifest = json.loads((root / "manifest.json").read_text())
    cam = manifest["camera"]
    names = {"fx": "fl_x", "fy": "fl_y", "cx": "cx", "cy": "cy", "width": "w", "height": "h"}
    settings = {**PREPARE, "camera": {key: cam[name] for key, name in names.items()}}
    scene = read_source(fmt, root, settings)
    truth = np.load(root / "poses_gt.npy")
    np.testing.assert_allclose(np.stack([v.c2w for v in scene.views]), truth, atol=1e-6)
    read = scene.views[0].camera
    assert (read.width, read.height) == (cam["w"], cam["h"])
    assert read.fx == pytest.approx(cam["fl_x"]) and read.cx == pytest.approx(cam["cx"])


def test_prepare_holds_out_every_eighth_view_and_perturbs_only_training_poses(
    tmp_path, nerfstudio_demo
):
    out = tmp_path / "prep" / "transforms.json"
    summary = prepare("nerfstudio", nerfstudio_demo, out, PREPARE)
    assert summary == {
        "views": 16,
        "train": 14,
        "test": 2,
        "spread": pytest.approx(summary["spread"]),
    }
    meta = json.loads(out.read_text())
    frames = meta["frames"]
    assert meta["test_filenames"] == [frames[0]["file_path"], frames[8]["file_path"]]
    scene = read_transforms(out)
    test = scene.split("test")
    assert [v.file_path for v in test] == [scene.views[0].file_path, scene.views[8].file_path]
    for view in test:
        np.testing.assert_array_equal(view.c2w, view.gt_c2w)
    moved = [not np.allclose(v.c2w, v.gt_c2w) for v in scene.split("train")]
    assert all(moved) and len(moved) == 14
    truth = np.load(nerfstudio_demo / "poses_gt.npy")
    np.testing.assert_allclose(np.stack([v.gt_c2w for v in scene.views]), truth, atol=1e-9)
    # Images are found from the prepared file's folder, and the noise is seeded.
    assert (
        scene.image_path(scene.views[3]).resolve() == (nerfstudio_demo / "images/003.png").resolve()
    )
    again = tmp_path / "again.json"
    prepare("nerfstudio", nerfstudio_demo, again, PREPARE)
    poses = [f["transform_matrix"] for f in json.loads(again.read_text())["frames"]]
    assert poses == [f["transform_matrix"] for f in frames]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_image_is_named(tmp_path, nerfstudio_demo):
    root = _copy(nerfstudio_demo, tmp_path / "scene")
    (root / "images" / "005.png").unlink()
    with pytest.raises(InputError) as err:
        prepare("nerfstudio", root, tmp_path / "out.json", PREPARE)
    assert err.value.path.endswith("images/005.png") and err.value.problem == "image not found"
    assert not (tmp_path / "out.json").exists()


def test_image_of_another_size_is_named(tmp_path, nerfstudio_demo):
    root = _copy(nerfstudio_demo, tmp_path / "scene")
    Image.new("RGB", (30, 24)).save(root / "images" / "002.png")
    with pytest.raises(InputError) as err:
        prepare("nerfstudio", root, tmp_path / "out.json", PREPARE)
    assert err.value.path.endswith("images/002.png")
    assert err.value.problem == "image is 30x24 but its camera says 24x24"


def test_non_invertible_transform_matrix_is_named(tmp_path, nerfstudio_demo):
    root = _copy(nerfstudio_demo, tmp_path / "scene")
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][4]["transform_matrix"][0][:3] = [0, 0, 0]
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(
        InputError, match=r"frame 4 \(images/004.png\): camera matrix is not invertible"
    ):
        read_transforms(root / "transforms.json")


def test_non_invertible_dtu_camera_is_named(tmp_path):
    root = demo_scene(tmp_path / "dtu", format="dtu")
    cameras = dict(np.load(root / "cameras_sphere.npz"))
    cameras["world_mat_3"][:, 2] = cameras["world_mat_3"][:, 1]  # two equal columns
    np.savez(root / "cameras_sphere.npz", **cameras)
    with pytest.raises(InputError) as err:
        read_dtu(root)
    assert err.value.path.endswith("cameras_sphere.npz")
    assert "world_mat_3 @ scale_mat_3: camera matrix is not invertible" in err.value.problem


@pytest.mark.parametrize(
    ("line", "problem"),
    [("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0", "line 3: expected 16 numbers, found 15"),
     ("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 x", "line 3: not a number in")],
)  # fmt: skip
def test_malformed_trajectory_line_is_named(tmp_path, line, problem):
    good = " ".join(map(str, np.eye(4).ravel()))
    traj = tmp_path / "traj.txt"
    traj.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    with pytest.raises(InputError) as err:
        read_trajectory(traj)
    assert err.value.problem.startswith(problem)


def test_intrinsics_follow_a_resize():
    cam = Intrinsics(600.0, 600.0, 599.5, 339.5, 1200, 680).scaled(0.25)
    assert (cam.width, cam.height, cam.fx, cam.cx) == (300, 170, 150.0, 599.5 / 4)
