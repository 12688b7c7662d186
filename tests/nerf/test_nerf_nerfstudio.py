"""The nerfstudio engine without nerfstudio: its commands, the scene folder it reads, resuming,
and the scoring of what ns-export and ns-eval wrote. ``data/nerfstudio-1.1.5/`` holds the real
outputs of nerfstudio 1.1.5 (ns-train nerfacto on the CPU, 60 steps of 1024 rays, then
ns-export cameras and ns-eval) on the demo scene of the config's defaults."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import malicious_checkpoint
from workflow.common.config import ConfigError, stage_settings
from workflow.common.errors import InputError
from workflow.nerf.demo import write_demo
from workflow.nerf.evaluate import evaluate_nerfstudio
from workflow.nerf.nerfstudio import (
    NerfstudioRun,
    check_settings,
    check_torch_home,
    eval_command,
    export_command,
    find_tools,
    latest_checkpoint,
    read_eval,
    read_exported_poses,
    read_manifest,
    read_renders,
    train_command,
    write_data,
)
from workflow.nerf.prepare import prepare
from workflow.nerf.transforms import read_transforms

ROOT = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "data" / "nerfstudio-1.1.5"
TOOLS = {name: f"/env/bin/{name}" for name in ("ns-train", "ns-export", "ns-eval")}


def settings(**overrides):
    return stage_settings({"engine": "nerfstudio", **overrides}, "nerf_train")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The demo scene with the config's default demo and prepare settings (the recording's)."""
    root = tmp_path_factory.mktemp("ns")
    write_demo(root / "scene", stage_settings({}, "nerf_demo"))
    out = root / "prep" / "transforms.json"
    prepare("nerfstudio", root / "scene", out, stage_settings({}, "nerf_prepare"))
    return out


def test_nerfacto_refines_with_so3xr3_or_not_at_all(tmp_path):
    run = NerfstudioRun(tmp_path, "nerfacto")
    command = train_command(TOOLS, settings(), run, seed=3, device="cuda", iterations=30000)
    assert command[:2] == ["/env/bin/ns-train", "nerfacto"]
    flags = dict(zip(command[2:-3:2], command[3:-3:2], strict=True))
    assert flags["--data"] == str(tmp_path / "data" / "transforms.json")
    assert flags["--max-num-iterations"] == "30000"
    assert flags["--machine.seed"] == "3" and flags["--machine.device-type"] == "cuda"
    assert flags["--pipeline.model.camera-optimizer.mode"] == "SO3xR3"
    assert flags["--vis"] == "tensorboard"
    assert command[-3:] == ["nerfstudio-data", "--downscale-factor", "1"]  # the parser last
    # nerfstudio writes outputs/<experiment>/<method>/<timestamp>/config.yml: fixed, so known
    out = Path(flags["--output-dir"]) / flags["--experiment-name"] / "nerfacto"
    assert out / flags["--timestamp"] / "config.yml" == run.config
    fixed = train_command(TOOLS, settings(refine_poses=False), run, 0, "cpu", 10)
    assert fixed[fixed.index("--pipeline.model.camera-optimizer.mode") + 1] == "off"


def test_resume_options_and_extra_arguments_come_before_the_data_parser(tmp_path):
    run = NerfstudioRun(tmp_path, "instant-ngp")
    extra = ["--optimizers.fields.optimizer.lr", "0.01"]
    ngp = settings(
        refine_poses=False,
        nerfstudio={"method": "instant-ngp", "downscale": 4, "extra_args": extra},
    )
    ckpt = run.models / "step-000002000.ckpt"
    command = train_command(TOOLS, ngp, run, 0, "cuda", 28000, resume=ckpt)
    assert command[1] == "instant-ngp"
    assert not any("camera-optimizer" in part for part in command)  # instant-ngp has none
    parser = command.index("nerfstudio-data")
    assert command[command.index("--load-checkpoint") + 1] == str(ckpt)
    assert command.index("--optimizers.fields.optimizer.lr") < parser
    assert command[parser:] == ["nerfstudio-data", "--downscale-factor", "4"]
    assert export_command(TOOLS, run) == [
        "/env/bin/ns-export", "cameras", "--load-config", str(run.config),
        "--output-dir", str(tmp_path / "cameras"),
    ]  # fmt: skip
    assert eval_command(TOOLS, run)[:3] == ["/env/bin/ns-eval", "--load-config", str(run.config)]


def test_instant_ngp_cannot_refine_poses():
    with pytest.raises(ConfigError, match="nerf.experiments.x: nerfstudio's instant-ngp has no"):
        check_settings(settings(nerfstudio={"method": "instant-ngp"}), "nerf.experiments.x")
    check_settings(settings(refine_poses=True), "nerf.experiments.x")  # nerfacto can
    check_settings(stage_settings({"nerfstudio": {"method": "instant-ngp"}}, "nerf_train"), "b")


def test_the_data_folder_is_what_nerfstudio_reads(prepared, tmp_path):
    scene = read_transforms(prepared)
    path = write_data(scene, tmp_path / "data", downscale=3)
    data = read_transforms(path)
    meta = json.loads(path.read_text())
    # one folder of uniquely named links, the split lists naming frames, as nerfstudio checks
    assert [v.file_path for v in data.views] == [f"images/{i:05d}.png" for i in range(24)]
    for split in ("train", "val", "test"):
        assert set(meta[f"{split}_filenames"]) <= {v.file_path for v in data.views}
    assert len(meta["train_filenames"]) == len(scene.train) == 21
    for view, original in zip(data.views, scene.views, strict=True):
        link = tmp_path / "data" / view.file_path
        assert link.is_symlink() and link.resolve() == scene.image_path(original).resolve()
        np.testing.assert_array_equal(view.c2w, original.c2w)  # the noisy poses to refine
        assert (view.gt_c2w is None) == (original.gt_c2w is None)
        # nerfstudio reads <data>/images_3/<name> at floor(40 / 3) pixels a side
        with Image.open(tmp_path / "data" / "images_3" / Path(view.file_path).name) as small:
            assert small.size == (13, 13)
    write_data(scene, tmp_path / "data", downscale=3)  # a rerun rewrites in place
    assert read_transforms(path).views[0].file_path == "images/00000.png"


def test_a_missing_image_stops_the_conversion(prepared, tmp_path):
    scene = read_transforms(prepared)
    shutil.copytree(scene.root.parent, tmp_path / "copy", symlinks=False)
    moved = read_transforms(tmp_path / "copy" / "prep" / "transforms.json")
    missing = moved.image_path(moved.views[5])
    missing.unlink()
    with pytest.raises(InputError, match="image not found") as err:
        write_data(moved, tmp_path / "data", downscale=1)
    assert str(err.value.path) == str(missing)


def test_resume_takes_the_newest_complete_checkpoint(tmp_path):
    models = tmp_path / "nerfstudio_models"
    models.mkdir()
    assert latest_checkpoint(models) is None
    for step in (1999, 3999):
        torch.save(
            {"step": step, "pipeline": {"w": torch.zeros(3)}}, models / f"step-{step:09d}.ckpt"
        )
    full = (models / "step-000003999.ckpt").read_bytes()
    (models / "step-000005999.ckpt").write_bytes(full[: len(full) // 2])  # killed mid-save
    assert latest_checkpoint(models) == (models / "step-000003999.ckpt", 3999)
    assert not (models / "step-000005999.ckpt").exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path):
    """nerfstudio unpickles its checkpoints fully: one left in the run folder is checked first."""
    models = tmp_path / "nerfstudio_models"
    models.mkdir()
    path = malicious_checkpoint(models / "step-000000099.ckpt", tmp_path / "RAN")
    with pytest.raises(InputError, match="refused") as err:
        latest_checkpoint(models)
    assert err.value.path == str(path)
    assert not (tmp_path / "RAN").exists()


def test_tools_come_from_the_bin_folder_else_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nerfstudio is not installed there nor on PATH") as err:
        find_tools(tmp_path / "bin")
    assert str(err.value.path) == str(tmp_path / "bin" / "ns-train")
    (tmp_path / "bin").mkdir()
    for name in ("ns-train", "ns-export", "ns-eval"):
        tool = tmp_path / "bin" / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    assert find_tools(tmp_path / "bin")["ns-eval"] == str(tmp_path / "bin" / "ns-eval")
    with pytest.raises(InputError, match="LPIPS needs AlexNet's weights"):
        check_torch_home(tmp_path / "torch")


def recorded_run(prepared, tmp_path):
    """A run folder as train_nerfstudio leaves it, with the recorded ns-export/ns-eval files."""
    run = tmp_path / "run"
    write_data(read_transforms(prepared), run / "data", downscale=1)
    shutil.copytree(RECORDED / "cameras", run / "cameras")
    shutil.copytree(RECORDED / "renders", run / "renders")
    shutil.copy(RECORDED / "eval.json", run / "eval.json")
    manifest = tmp_path / "nerfstudio.json"
    record = json.loads((RECORDED / "nerfstudio.json").read_text())
    manifest.write_text(json.dumps(record))
    return manifest


def test_recorded_outputs_score_like_ns_eval(prepared, tmp_path):
    """Our PSNR/SSIM of ns-eval's saved renders agree with ns-eval's own numbers, and the
    exported poses (in nerfstudio's oriented, rescaled frame) align back to the truth."""
    result = evaluate_nerfstudio(recorded_run(prepared, tmp_path))
    ns = json.loads((RECORDED / "eval.json").read_text())["results"]
    assert result["metrics"]["psnr"] == pytest.approx(ns["psnr"], abs=0.15)
    assert result["metrics"]["ssim"] == pytest.approx(ns["ssim"], abs=0.03)
    assert result["extra"]["nerfstudio"]["lpips"] == ns["lpips"]
    # 60 steps barely move the poses: once Sim(3) undoes the dataparser's rotation, centring
    # and scaling, the exported error is the noise the poses were given (tens of degrees if not)
    initial = result["extra"]["initial_rotation_error_deg"]
    assert initial == pytest.approx(6.06, abs=0.05)
    assert result["metrics"]["rotation_error_deg"] == pytest.approx(initial, abs=0.5)
    assert {row["split"] for row in result["rows"]} == {"train", "test"}
    assert len(result["renders"]) == 3 and result["renders"][0][0].shape == (40, 40, 3)


def test_exported_poses_up_to_a_similarity_have_no_error(prepared, tmp_path):
    """Exported poses that are the truth in another frame (rotated, shifted, scaled, as
    nerfstudio's dataparser leaves them) score zero error."""
    manifest = recorded_run(prepared, tmp_path)
    data = read_transforms(tmp_path / "run" / "data" / "transforms.json")
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])  # fmt: skip
    frames = []
    for view in data.split("train"):
        pose = np.array(view.gt_c2w if view.gt_c2w is not None else view.c2w)
        pose[:3, :3] = rot @ pose[:3, :3]
        pose[:3, 3] = 0.3 * rot @ pose[:3, 3] + [1.0, -2.0, 0.5]
        frames.append({"file_path": f"/elsewhere/{Path(view.file_path).name}",
                       "transform": pose[:3].tolist()})  # fmt: skip
    (tmp_path / "run" / "cameras" / "transforms_train.json").write_text(json.dumps(frames))
    result = evaluate_nerfstudio(manifest)
    assert result["metrics"]["rotation_error_deg"] < 1e-4
    assert result["metrics"]["translation_error"] < 1e-6


@pytest.mark.parametrize(
    ("reader", "name", "content", "problem"),
    [
        (read_exported_poses, "transforms_train.json", "[{\"file_path\": \"a.png\"}]",
         "not ns-export's camera list"),
        (read_exported_poses, "transforms_train.json", '[{"file_path": "a", "transform": [[1]]}]',
         "not ns-export's camera list: a transform of shape"),
        (read_eval, "eval.json", '{"results": {"psnr": "high"}}', "not ns-eval's output"),
        (read_manifest, "nerfstudio.json", '{"engine": "builtin"}',
         "not a nerfstudio run manifest: its engine is not nerfstudio"),
    ],
)  # fmt: skip
def test_malformed_tool_outputs_name_the_file(tmp_path, reader, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as err:
        reader(path)
    assert str(err.value.path) == str(path)
    with pytest.raises(InputError, match="not found"):
        reader(tmp_path / "missing.json")


def test_too_few_renders_is_an_error(tmp_path):
    Image.new("RGB", (8, 4)).save(tmp_path / "eval_img_0000.png")
    assert len(read_renders(tmp_path, 1)) == 1
    with pytest.raises(InputError, match="ns-eval saved fewer than 2 renders"):
        read_renders(tmp_path, 2)


def test_the_stage_without_nerfstudio_says_how_to_get_it(prepared, tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/nerf.py"), "train", "--scene", str(prepared),
         "--settings", json.dumps({"engine": "nerfstudio"}), "--run-dir", str(tmp_path / "r"),
         "--out", str(tmp_path / "nerfstudio.json"), "--ns-bin", str(tmp_path / "none")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {tmp_path / 'none' / 'ns-train'}: nerfstudio is not installed" in proc.stderr
    assert "make nerfstudio" in proc.stderr
    assert not (tmp_path / "nerfstudio.json").exists()
