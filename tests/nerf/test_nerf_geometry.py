"""Axis conventions, rotations, pose noise and the Sim(3) alignment of pose errors."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from workflow.nerf.geometry import (
    align_poses,
    opencv_to_opengl,
    perturb_poses,
    pose_errors,
    rotation_angle_deg,
    so3_exp,
)
from workflow.nerf.scene import orbit_poses


def test_opencv_camera_looking_along_world_x_becomes_opengl_looking_down_minus_z():
    # OpenCV camera at (1, 2, 3) looking along world +X, image down = world -Z.
    cv = np.eye(4)
    cv[:3, :3] = np.column_stack([[0, -1, 0], [0, 0, -1], [1, 0, 0]])  # x right, y down, z fwd
    cv[:3, 3] = [1, 2, 3]
    gl = opencv_to_opengl(cv)
    np.testing.assert_allclose(-gl[:3, 2], [1, 0, 0])  # OpenGL looks along its -Z
    np.testing.assert_allclose(gl[:3, 1], [0, 0, 1])  # its +Y is up
    np.testing.assert_allclose(gl[:3, 0], cv[:3, 0])  # +X right in both
    np.testing.assert_allclose(gl[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(opencv_to_opengl(gl), cv)  # the flip is its own inverse


def test_so3_exp_matches_scipy_and_is_smooth_at_zero():
    rng = np.random.default_rng(0)
    omega = rng.normal(size=(20, 3))
    np.testing.assert_allclose(
        so3_exp(torch.from_numpy(omega)).numpy(),
        Rotation.from_rotvec(omega).as_matrix(),
        atol=1e-12,
    )
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    so3_exp(zero)[0, 1, 0].backward()  # d R[1,0] / d omega_z = 1 at the identity
    np.testing.assert_allclose(zero.grad.numpy(), [[0, 0, 1]])


def test_noise_is_seeded_and_of_the_configured_size():
    poses = orbit_poses(200, 3.0, 0)
    a = perturb_poses(poses, 5.0, 0.1, seed=3)
    np.testing.assert_array_equal(a, perturb_poses(poses, 5.0, 0.1, seed=3))
    assert not np.allclose(a, perturb_poses(poses, 5.0, 0.1, seed=4))
    angles = rotation_angle_deg(np.swapaxes(a[:, :3, :3], -1, -2) @ poses[:, :3, :3])
    assert 4.0 < math.sqrt((angles**2).mean()) < 6.0  # RMS angle = the configured std
    shifts = np.linalg.norm(a[:, :3, 3] - poses[:, :3, 3], axis=-1)
    assert 0.085 < math.sqrt((shifts**2).mean() / 3) < 0.115  # per-axis std


def test_alignment_removes_a_similarity_exactly():
    truth = orbit_poses(12, 3.0, 1)
    s, rot = 0.37, Rotation.from_rotvec([0.3, -1.1, 0.4]).as_matrix()
    moved = np.array(truth)
    moved[:, :3, :3] = rot @ truth[:, :3, :3]
    moved[:, :3, 3] = s * truth[:, :3, 3] @ rot.T + [5.0, -2.0, 1.0]
    rotation, translation = pose_errors(moved, truth)
    assert rotation.max() < 1e-5 and translation.max() < 1e-9
    aligned, (scale, _, _) = align_poses(moved, truth)
    assert scale == pytest.approx(1 / s)
    np.testing.assert_allclose(aligned, truth, atol=1e-9)


def test_pose_error_measures_what_was_injected_in_the_camera_frame():
    truth = orbit_poses(12, 3.0, 1)
    turned = perturb_poses(truth, 3.0, 0.0, seed=0)  # rotations about the camera centres only
    rotation, translation = pose_errors(turned, truth)
    injected = rotation_angle_deg(np.swapaxes(turned[:, :3, :3], -1, -2) @ truth[:, :3, :3])
    np.testing.assert_allclose(rotation, injected, atol=1e-6)
    assert translation.max() < 1e-9
