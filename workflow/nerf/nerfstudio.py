"""The nerfstudio engine: ``nerfacto`` (camera optimizer SO3xR3, or off) or ``instant-ngp``,
run through nerfstudio's own command line in nerfstudio's own environment.

nerfstudio 1.1.5 pins numpy<2, timm 0.6.7 and protobuf 3.20, so it never shares the main
environment: this module builds the ``ns-train``/``ns-export``/``ns-eval`` commands, converts a
prepared scene into the folder nerfstudio reads, and reads back what those tools write. The
evaluation (:mod:`workflow.nerf.evaluate`) then scores both engines with the same code.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from workflow.common.atomic import write_json
from workflow.common.checkpoint import load_checkpoint
from workflow.common.config import ConfigError
from workflow.common.errors import InputError
from workflow.common.images import decode_image
from workflow.common.target import RunTarget
from workflow.nerf.transforms import Scene, load_image, read_transforms, write_transforms

log = logging.getLogger("lsai.nerf.nerfstudio")

CAMERA_OPTIMIZER = {"nerfacto": True, "instant-ngp": False}  # method -> has one
EXPERIMENT, TIMESTAMP = "nerf", "run"  # fixed, so the run's folders are known in advance
TOOLS = ("ns-train", "ns-export", "ns-eval")


@dataclass(frozen=True)
class NerfstudioRun:
    """The folders of one run: the converted scene, nerfstudio's outputs, the exports."""

    root: Path
    method: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "outputs" / EXPERIMENT / self.method / TIMESTAMP / "config.yml"

    @property
    def models(self) -> Path:
        return self.config.parent / "nerfstudio_models"

    @property
    def cameras(self) -> Path:
        return self.root / "cameras"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    @property
    def renders(self) -> Path:
        return self.root / "renders"


def check_settings(settings: Mapping[str, Any], where: str) -> None:
    """What the schema cannot say: instant-ngp has no camera optimizer to refine poses with,
    and the ``pose`` setting (a plug-in variant among them) is the builtin engine's: nerfstudio
    refines with its own camera optimizer."""
    method = settings["nerfstudio"]["method"]
    pose = settings.get("pose", "so3xr3")
    if settings["engine"] == "nerfstudio" and pose != "so3xr3":
        raise ConfigError(
            f"{where}: pose {pose!r} is the builtin engine's; the nerfstudio engine refines "
            "poses with nerfacto's own camera optimizer (SO3xR3): leave pose out"
        )
    if settings["engine"] == "nerfstudio" and settings["refine_poses"]:
        if not CAMERA_OPTIMIZER[method]:
            raise ConfigError(
                f"{where}: nerfstudio's {method} has no camera optimizer: set refine_poses: false"
            )


def find_tools(bin_dir: Path | None) -> dict[str, str]:
    """``ns-*`` executables: from ``bin_dir`` (a venv's bin), else from PATH (a conda env)."""
    tools = {}
    for name in TOOLS:
        local = bin_dir / name if bin_dir else None
        found = str(local) if local and os.access(local, os.X_OK) else shutil.which(name)
        if not found:
            where = local or Path(name)
            raise InputError(
                where,
                "nerfstudio is not installed there nor on PATH: build its environment with "
                "`make nerfstudio`, or set nerf.nerfstudio_bin",
            )
        tools[name] = found
    return tools


def write_data(scene: Scene, data: Path, downscale: int) -> Path:
    """The scene as a folder nerfstudio reads: every image linked as ``images/NNNNN.ext``
    (any source layout, unique names) and, when ``downscale`` > 1, resized copies in
    ``images_<downscale>/`` (nerfstudio looks there, and rounds sizes down). Masks are left
    out, as the builtin engine does. Returns the written ``transforms.json``."""
    views, renamed = [], {}
    for number, view in enumerate(scene.views):
        source = scene.image_path(view)
        if not source.is_file():  # sizes were checked by nerf_prepare, from the headers
            raise InputError(source, "image not found")
        name = f"{number:05d}{source.suffix.lower()}"
        _link(data / "images" / name, source.resolve())
        target = data / f"images_{downscale}" / name
        if downscale > 1 and not target.is_file():  # decoded only to resize, once
            small = (math.floor(view.camera.width / downscale),
                     math.floor(view.camera.height / downscale))  # fmt: skip
            target.parent.mkdir(parents=True, exist_ok=True)
            rgb = Image.fromarray(np.round(load_image(source, view.camera) * 255).astype(np.uint8))
            _save_atomic(rgb.resize(small, Image.Resampling.BOX), target)
        renamed[view.file_path] = f"images/{name}"
        views.append(replace(view, file_path=f"images/{name}", mask_path=None))
    converted = Scene(
        root=data,
        views=views,
        train=[renamed[n] for n in scene.train] if scene.train is not None else None,
        test=[renamed[n] for n in scene.test] if scene.test is not None else None,
    )
    if converted.train is None or converted.test is None:
        raise InputError(scene.root / "transforms.json", "no train/test split (run nerf_prepare)")
    path = data / "transforms.json"
    write_transforms(path, converted)
    return path


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == target:
            return
        link.unlink()
    link.symlink_to(target)


def _save_atomic(image: Image.Image, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    image.save(tmp, format=Image.registered_extensions().get(target.suffix.lower(), "PNG"))
    tmp.replace(target)


def latest_checkpoint(models: Path) -> tuple[Path, int] | None:
    """The newest readable ``step-*.ckpt`` and its step. A file cut short by a kill (torch
    writes a zip, whose directory comes last) is removed: it holds nothing to resume. The one
    kept must pass the safe loader (nerfstudio's tools unpickle it fully): a checkpoint that
    asks to run code is an InputError."""
    found = []
    for path in models.glob("step-*.ckpt"):
        try:
            found.append((int(path.stem.removeprefix("step-")), path))
        except ValueError:
            continue
    for step, path in sorted(found, reverse=True):
        if zipfile.is_zipfile(path):
            load_checkpoint(path, "nerfstudio checkpoint")
            return path, step
        log.warning("%s: incomplete checkpoint (killed while saving?), removed", path)
        path.unlink()
    return None


def train_command(
    tools: Mapping[str, str], settings: Mapping[str, Any], run: NerfstudioRun, seed: int,
    device: str, iterations: int, resume: Path | None = None,
) -> list[str]:  # fmt: skip
    """``ns-train <method> ...`` for ``iterations`` more steps (nerfstudio counts a resumed
    run's steps from its checkpoint), then the ``nerfstudio-data`` parser's options."""
    ns = settings["nerfstudio"]
    command = [
        tools["ns-train"], run.method,
        "--data", str(run.data / "transforms.json"),
        "--output-dir", str(run.root / "outputs"),
        "--experiment-name", EXPERIMENT,
        "--timestamp", TIMESTAMP,
        "--max-num-iterations", str(iterations),
        "--steps-per-save", str(ns["steps_per_save"]),
        "--save-only-latest-checkpoint", "True",
        "--vis", "tensorboard",  # no viewer server on a compute node
        "--viewer.quit-on-train-completion", "True",
        "--machine.seed", str(seed),
        "--machine.device-type", device,
    ]  # fmt: skip
    if CAMERA_OPTIMIZER[run.method]:
        mode = "SO3xR3" if settings["refine_poses"] else "off"
        command += ["--pipeline.model.camera-optimizer.mode", mode]
    if resume is not None:
        command += ["--load-checkpoint", str(resume)]
    command += [*ns["extra_args"], "nerfstudio-data", "--downscale-factor", str(ns["downscale"])]
    return command


def export_command(tools: Mapping[str, str], run: NerfstudioRun) -> list[str]:
    """``ns-export cameras``: the training poses with the camera optimizer applied."""
    return [tools["ns-export"], "cameras", "--load-config", str(run.config),
            "--output-dir", str(run.cameras)]  # fmt: skip


def eval_command(tools: Mapping[str, str], run: NerfstudioRun) -> list[str]:
    """``ns-eval``: held-out metrics, and each view's ``[truth | render]`` saved as a PNG."""
    return [
        tools["ns-eval"], "--load-config", str(run.config), "--output-path", str(run.eval_json),
        "--render-output-path", str(run.renders),
    ]  # fmt: skip


LPIPS_WEIGHTS = Path("hub/checkpoints/alexnet-owt-7be5be79.pth")  # torchvision's file name


def check_torch_home(torch_home: Path | None) -> None:
    """nerfacto builds LPIPS (AlexNet) when it starts: without the weights it would try the
    network, which a compute node does not have, and fail deep inside nerfstudio."""
    if torch_home is not None and not (Path(torch_home) / LPIPS_WEIGHTS).is_file():
        raise InputError(
            Path(torch_home) / LPIPS_WEIGHTS,
            "not found: LPIPS needs AlexNet's weights here (`make nerfstudio` fetches them)",
        )


def tool_env(torch_home: Path | None) -> dict[str, str]:
    """The tools' environment: LPIPS's AlexNet weights come from ``torch_home`` (nothing is
    downloaded on a compute node), and nerfstudio 1.1.5's ``torch.load`` of its own
    checkpoints predates torch 2.6's ``weights_only`` default."""
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", HF_HUB_OFFLINE="1")
    if torch_home is not None:
        env["TORCH_HOME"] = str(Path(torch_home).resolve())
    return env


def run_tool(command: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
    """Run one ns-* command, its output appended to ``log_path``; a failure names the log."""
    log.info("$ %s", " ".join(command))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    code = done.returncode
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise InputError(
            log_path, f"{Path(command[0]).name} failed (exit {code}):\n  " + "\n  ".join(tail)
        )


def read_exported_poses(path: Path) -> dict[str, np.ndarray]:
    """``ns-export cameras``' frames as image name -> 4x4 camera-to-world (OpenGL, in the
    dataparser's frame: oriented, centred and scaled, which a Sim(3) alignment undoes)."""
    try:
        frames = json.loads(path.read_text())
        poses = {}
        for frame in frames:
            pose = np.asarray(frame["transform"], dtype=np.float64)
            if pose.shape == (3, 4):
                pose = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
            if pose.shape != (4, 4):
                raise ValueError(f"a transform of shape {pose.shape}")
            poses[Path(frame["file_path"]).name] = pose
    except FileNotFoundError:
        raise InputError(path, "not found (ns-export cameras wrote nothing?)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(path, f"not ns-export's camera list: {err}") from None
    return poses


def read_eval(path: Path) -> dict[str, float]:
    """``ns-eval``'s averaged results (psnr, ssim, lpips and their std, speed)."""
    try:
        results = json.loads(path.read_text())["results"]
        return {str(k): float(v) for k, v in results.items()}
    except FileNotFoundError:
        raise InputError(path, "not found (ns-eval wrote nothing?)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(path, f"not ns-eval's output: {err}") from None


def read_renders(renders: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(truth, render) of each held-out view from ns-eval's ``eval_img_NNNN.png`` files, in
    nerfstudio's order of the test split (sorted by file name)."""
    pairs = []
    for index in range(count):
        path = renders / f"eval_img_{index:04d}.png"
        if not path.is_file():
            raise InputError(path, f"not found: ns-eval saved fewer than {count} renders")
        both = np.asarray(decode_image(path), dtype=np.float32) / 255.0
        if both.shape[1] % 2:
            raise InputError(path, "not a [truth | render] pair (odd width)")
        half = both.shape[1] // 2
        pairs.append((both[:, :half], both[:, half:]))
    return pairs


def train_nerfstudio(
    scene_path: Path, settings: Mapping[str, Any], target: RunTarget,
    bin_dir: Path | None, torch_home: Path | None,
) -> None:  # fmt: skip
    """Convert, train (resuming from the newest checkpoint), export the refined poses and
    evaluate; publish the target's ``final``, the manifest the evaluation stage reads."""
    run_dir, out, seed, gpus = target.run_dir, target.final, target.seed, target.gpus
    check_settings(settings, "settings")
    tools = find_tools(bin_dir)
    check_torch_home(torch_home)
    ns = settings["nerfstudio"]
    run = NerfstudioRun(Path(run_dir).resolve(), ns["method"])
    scene = read_transforms(scene_path)
    write_data(scene, run.data, int(ns["downscale"]))
    env, logs = tool_env(torch_home), run.root / "nerfstudio.log"
    started = time.monotonic()
    total = int(ns["max_num_iterations"])
    latest = latest_checkpoint(run.models)
    done = latest[1] + 1 if latest else 0
    if done < total:
        log.info("%s: steps %d-%d of %d (log: %s)", run.method, done, total - 1, total, logs)
        resume = latest[0] if latest else None
        device = "cuda" if gpus > 0 else "cpu"
        run_tool(train_command(tools, settings, run, seed, device, total - done, resume), env, logs)
    else:
        log.info("%s: all %d steps already trained", run.method, total)
    run_tool(export_command(tools, run), env, logs)
    run_tool(eval_command(tools, run), env, logs)
    results = read_eval(run.eval_json)
    log.info("ns-eval: PSNR %.2f SSIM %.3f LPIPS %.3f", results.get("psnr", math.nan),
             results.get("ssim", math.nan), results.get("lpips", math.nan))  # fmt: skip

    def rel(path: Path) -> str:
        return os.path.relpath(path, Path(out).resolve().parent)

    write_json(out, {
        "engine": "nerfstudio",
        "method": run.method,
        "data": rel(run.data / "transforms.json"),
        "cameras": rel(run.cameras / "transforms_train.json"),
        "eval": rel(run.eval_json),
        "renders": rel(run.renders),
        "config": rel(run.config),
        "run_info": {
            "train_wall_time_s": round(time.monotonic() - started, 2),
            "world_size": 1,
            "resumed_from_epoch": None if latest is None else latest[1],
            "steps": total,
            "seed": seed,
        },
    })  # fmt: skip


MANIFEST_PATHS = ("data", "cameras", "eval", "renders", "config")


def read_manifest(path: Path) -> dict[str, Any]:
    """A run's manifest (written by :func:`train_nerfstudio`), its paths made absolute."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        if record.get("engine") != "nerfstudio":
            raise ValueError("its engine is not nerfstudio")
        for key in MANIFEST_PATHS:
            record[key] = (path.parent / record[key]).resolve()
        if not isinstance(record["run_info"]["steps"], int):
            raise ValueError("run_info.steps is not a step count")
    except FileNotFoundError:
        raise InputError(path, "not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError,
            ValueError) as err:  # fmt: skip
        raise InputError(path, f"not a nerfstudio run manifest: {err}") from None
    return record
