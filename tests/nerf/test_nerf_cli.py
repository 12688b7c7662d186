"""The stages through the script, as the rules run them: each reads what the one before
wrote, and bad input is one ``error: <path>: <problem>`` line with exit status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TINY = {"steps_per_epoch": 5, "max_epochs": 2, "rays": 128, "samples": 16,
        "test_time": {"steps": 5, "rays": 128, "lr": 0.003}}  # fmt: skip


def nerf(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/nerf.py"), *map(str, args)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def one_error(proc, path, problem):
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}: {problem}"), lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "scene"
    nerf("demo", "--root", root, "--settings", json.dumps({"views": 9, "image_size": 16}))
    return root


def test_chain_writes_what_the_next_stage_reads(tmp_path, demo):
    scene = tmp_path / "prep/transforms.json"
    nerf("prepare", "--format", "nerfstudio", "--root", demo, "--out", scene)
    settings = json.dumps(TINY)
    run = tmp_path / "exp/seed0"
    nerf("train", "--scene", scene, "--settings", settings, "--run-dir", run / "run",
         "--out", run / "final.ckpt", "--threads", "1")  # fmt: skip
    nerf("evaluate", "--scene", scene, "--checkpoint", run / "final.ckpt", "--metrics",
         run / "metrics.json", "--predictions", run / "predictions.parquet", "--renders",
         run / "renders.png", "--dataset", "demo", "--experiment", "exp",
         "--settings", settings)  # fmt: skip
    record = json.loads((run / "metrics.json").read_text())
    assert record["track"] == "nerf" and record["experiment"] == "exp"
    assert set(record["metrics"]) == {"psnr", "ssim", "rotation_error_deg", "translation_error"}
    assert (
        record["higher_is_better"]["psnr"] and not record["higher_is_better"]["rotation_error_deg"]
    )
    assert len(record["extra"]["history"]) == 2
    rows = pd.read_parquet(run / "predictions.parquet")
    assert (rows["split"] == "test").sum() == 2 and (rows["split"] == "train").sum() == 7
    nerf("figures", "--metrics", run / "metrics.json", "--out", tmp_path / "pose_error.png")
    for png in (run / "renders.png", tmp_path / "pose_error.png"):
        with Image.open(png) as image:
            assert image.size[0] > 100


def test_missing_image(tmp_path, demo):
    import shutil

    root = tmp_path / "scene"
    shutil.copytree(demo, root)
    (root / "images/004.png").unlink()
    proc = nerf("prepare", "--format", "nerfstudio", "--root", root, "--out",
                tmp_path / "t.json", check=False)  # fmt: skip
    one_error(proc, root / "images/004.png", "image not found")
    assert not (tmp_path / "t.json").exists()


def test_image_of_another_size(tmp_path, demo):
    import shutil

    root = tmp_path / "scene"
    shutil.copytree(demo, root)
    Image.new("RGB", (16, 12)).save(root / "images/001.png")
    proc = nerf("prepare", "--format", "nerfstudio", "--root", root, "--out",
                tmp_path / "t.json", check=False)  # fmt: skip
    one_error(proc, root / "images/001.png", "image is 16x12 but its camera says 16x16")


def test_malformed_trajectory_line(tmp_path):
    root = tmp_path / "replica"
    nerf("demo", "--root", root, "--settings",
         json.dumps({"views": 4, "image_size": 8, "format": "replica"}))  # fmt: skip
    lines = (root / "traj.txt").read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:12])
    (root / "traj.txt").write_text("\n".join(lines) + "\n")
    proc = nerf("prepare", "--format", "replica", "--root", root, "--out", tmp_path / "t.json",
                "--settings", json.dumps({"frame_stride": 1}), check=False)  # fmt: skip
    one_error(proc, root / "traj.txt", "line 3: expected 16 numbers, found 12")


def test_non_invertible_camera_matrix(tmp_path):
    import numpy as np

    root = tmp_path / "dtu"
    nerf("demo", "--root", root, "--settings",
         json.dumps({"views": 4, "image_size": 8, "format": "dtu"}))  # fmt: skip
    cameras = dict(np.load(root / "cameras_sphere.npz"))
    cameras["world_mat_1"][:3, :3] = 0
    np.savez(root / "cameras_sphere.npz", **cameras)
    proc = nerf("prepare", "--format", "dtu", "--root", root, "--out", tmp_path / "t.json",
                check=False)  # fmt: skip
    one_error(proc, root / "cameras_sphere.npz",
              "world_mat_1 @ scale_mat_1: camera matrix is not invertible")  # fmt: skip


def test_every_stage_has_help():
    for stage in ("demo", "prepare", "train", "evaluate", "figures"):
        proc = nerf(stage, "--help")
        assert "usage:" in proc.stdout and "--" in proc.stdout
