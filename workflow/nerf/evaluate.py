"""Evaluation of a builtin-engine run, BARF's protocol: pose errors of the refined training
views after Sim(3) alignment to the ground truth, and held-out PSNR/SSIM after test-time pose
alignment (the held-out cameras are mapped into the run's frame by that Sim(3), then their
poses alone are optimised against their images with the field frozen, so a run is not judged
on the frame it happened to converge to)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from workflow.common.errors import InputError
from workflow.common.metrics import RunEvaluation
from workflow.common.training import checkpoint_run_info, read_checkpoint
from workflow.nerf.builtin import FIELD_KEYS, as_4x4, from_box, scene_arrays, to_box
from workflow.nerf.field import RadianceField, camera_rays, make_corrections, render_rays
from workflow.nerf.geometry import align_poses, pose_errors
from workflow.nerf.nerfstudio import (
    read_eval,
    read_exported_poses,
    read_manifest,
    read_renders,
)
from workflow.nerf.plots import renders_figure
from workflow.nerf.transforms import Scene, View, read_transforms

log = logging.getLogger("lsai.nerf.evaluate")


def load_run(path: Path) -> tuple[RadianceField, dict[str, torch.Tensor], dict[str, Any]]:
    """The field, the run's pose tensors (box coordinates) and its ``nerf`` record."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("nerf")
    state = checkpoint.get("state_dict", {})
    if not meta or "poses" not in state:
        raise InputError(path, "not a builtin NeRF checkpoint (no 'nerf' record)")
    field = RadianceField(**{k: meta["settings"][k] for k in FIELD_KEYS})
    field.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("field.")})
    field.eval().requires_grad_(False)
    corrections = make_corrections(meta["settings"], len(state["poses"]))
    prefix = "corrections."
    corrections.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
    with torch.no_grad():
        refined = corrections(state["poses"], torch.arange(len(state["poses"])))
    tensors = {
        "initial": state["poses"].double(),
        "refined": refined.double(),
        "gt": state.get("gt_poses"),
        "intrinsics": state["intrinsics"],
    }
    return field, tensors, meta


def render_image(
    field: RadianceField, c2w: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int],
    settings: Mapping[str, Any], chunk: int = 8192,
) -> torch.Tensor:  # fmt: skip
    """A full (H, W, 3) image of one camera (3x4 or 4x4 pose, box coordinates)."""
    height, width = size
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([x.flatten(), y.flatten()], -1).float() + 0.5
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), chunk):
            p = pixels[start : start + chunk]
            origins, dirs = camera_rays(
                c2w[None, :3].float().expand(len(p), 3, 4), p, intrinsics[None].expand(len(p), 4)
            )
            out.append(
                render_rays(field, origins, dirs, settings["samples"], settings["background"])
            )
    return torch.cat(out).reshape(height, width, 3).clamp(0, 1)


def align_test_poses(
    field: RadianceField, poses: torch.Tensor, images: torch.Tensor, intrinsics: torch.Tensor,
    settings: Mapping[str, Any], seed: int,
) -> torch.Tensor:  # fmt: skip
    """Held-out poses optimised photometrically against their images, the field frozen."""
    steps, rays, lr = (settings["test_time"][k] for k in ("steps", "rays", "lr"))
    corrections = make_corrections(settings, len(poses))
    if steps == 0:
        return poses
    optimizer = torch.optim.Adam(corrections.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n, h, w, _ = images.shape
    for _step in range(steps):
        view = torch.randint(0, n, (rays,), generator=generator)
        x = torch.randint(0, w, (rays,), generator=generator)
        y = torch.randint(0, h, (rays,), generator=generator)
        pose = corrections(poses[view], view)
        pixels = torch.stack([x, y], -1).float() + 0.5
        origins, dirs = camera_rays(pose, pixels, intrinsics[view])
        rgb = render_rays(field, origins, dirs, settings["samples"], settings["background"])
        loss = torch.mean((rgb - images[view, y, x]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return corrections(poses, torch.arange(n))


def image_scores(rendered: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    pred, target = rendered.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None]
    return (
        float(peak_signal_noise_ratio(pred, target, data_range=1.0)),
        float(structural_similarity_index_measure(pred, target, data_range=1.0)),
    )


def _train_rows(
    views: Sequence[View], rot: np.ndarray, trans: np.ndarray, rot0: np.ndarray, trans0: np.ndarray
) -> list[dict[str, Any]]:
    return [
        {
            "view": view.file_path, "split": "train",
            "rotation_error_deg": float(rot[i]), "translation_error": float(trans[i]),
            "initial_rotation_error_deg": float(rot0[i]),
            "initial_translation_error": float(trans0[i]),
        }
        for i, view in enumerate(views)
    ]  # fmt: skip


def _summary(
    rows: Sequence[Mapping[str, Any]], rot: np.ndarray, trans: np.ndarray, rot0: np.ndarray,
    trans0: np.ndarray,
) -> tuple[dict[str, float], dict[str, Any]]:  # fmt: skip
    """Both engines' metrics: held-out PSNR/SSIM means, mean pose errors before and after."""
    test_rows = [row for row in rows if row["split"] == "test"]
    metrics = {
        "psnr": float(np.mean([row["psnr"] for row in test_rows])),
        "ssim": float(np.mean([row["ssim"] for row in test_rows])),
        "rotation_error_deg": float(rot.mean()),
        "translation_error": float(trans.mean()),
    }
    extra = {
        "initial_rotation_error_deg": float(rot0.mean()),
        "initial_translation_error": float(trans0.mean()),
    }
    return metrics, extra


def evaluate_run(checkpoint: Path, scene: Scene, seed: int) -> dict[str, Any]:
    """Metrics, per-view rows, the pose-error history and the held-out renders of a run."""
    field, poses, meta = load_run(checkpoint)
    settings = meta["settings"]
    center, bound = np.asarray(meta["box"][0]), float(meta["box"][1])
    scene_poses = {k: from_box(as_4x4(poses[k]), center, bound) for k in ("initial", "refined")}
    if poses["gt"] is None:
        raise InputError(
            checkpoint, "the run's scene has no ground-truth poses to evaluate against"
        )
    truth = from_box(as_4x4(poses["gt"]), center, bound)
    rot0, trans0 = pose_errors(scene_poses["initial"], truth)
    rot, trans = pose_errors(scene_poses["refined"], truth)
    # Held-out cameras into the run's frame: the inverse of the run -> truth similarity.
    _, (s, r, t) = align_poses(scene_poses["refined"], truth)
    test = scene_arrays(scene, "test", settings)
    held_out = test["gt_poses"] if test["gt_poses"] is not None else test["poses"]
    gt_test = from_box(as_4x4(held_out), center, bound)
    mapped = np.array(gt_test)
    mapped[:, :3, :3] = r.T @ gt_test[:, :3, :3]
    mapped[:, :3, 3] = ((r.T @ (gt_test[:, :3, 3] - t).T) / s).T
    start = torch.from_numpy(to_box(mapped, center, bound)).float()
    images, intrinsics = test["images"], test["intrinsics"].float()
    aligned = align_test_poses(field, start, images, intrinsics, settings, seed)
    rows, renders = [], []
    for i, view in enumerate(test["views"]):
        size = tuple(images[i].shape[:2])
        before = render_image(field, start[i], intrinsics[i], size, settings)
        after = render_image(field, aligned[i], intrinsics[i], size, settings)
        psnr_before, _ = image_scores(before, images[i])
        psnr, ssim = image_scores(after, images[i])
        rows.append({"view": view.file_path, "split": "test", "psnr": psnr, "ssim": ssim,
                     "psnr_before_alignment": psnr_before})  # fmt: skip
        renders.append((images[i].numpy(), after.numpy()))
    rows += _train_rows(scene.split("train"), rot, trans, rot0, trans0)
    metrics, extra = _summary(rows, rot, trans, rot0, trans0)
    test_rows = [row for row in rows if row["split"] == "test"]
    extra["psnr_before_alignment"] = float(
        np.mean([row["psnr_before_alignment"] for row in test_rows])
    )
    extra["history"] = meta.get("history", [])
    return {"metrics": metrics, "extra": extra, "rows": rows, "renders": renders}


def evaluate_nerfstudio(manifest: Path) -> dict[str, Any]:
    """The same metrics for a nerfstudio run: pose errors of ``ns-export``'s refined training
    poses after Sim(3) alignment, and PSNR/SSIM of ``ns-eval``'s held-out renders scored by
    :func:`image_scores` (ns-eval renders the held-out views at their given poses: nerfstudio
    has no test-time alignment). ns-eval's own averages, LPIPS among them, go to ``extra``."""
    record = read_manifest(manifest)
    scene = read_transforms(record["data"])
    exported = read_exported_poses(record["cameras"])
    train = scene.split("train")
    missing = [v.file_path for v in train if Path(v.file_path).name not in exported]
    if missing:
        raise InputError(record["cameras"], f"no pose for training view {missing[0]}")
    refined = np.stack([exported[Path(v.file_path).name] for v in train])
    initial = np.stack([v.c2w for v in train])
    truth = np.stack([v.gt_c2w if v.gt_c2w is not None else v.c2w for v in train])
    rot0, trans0 = pose_errors(initial, truth)
    rot, trans = pose_errors(refined, truth)
    test = sorted(scene.split("test"), key=lambda v: v.file_path)  # nerfstudio's order
    pairs = read_renders(record["renders"], len(test))
    rows = []
    for view, (image, render) in zip(test, pairs, strict=True):
        psnr, ssim = image_scores(torch.from_numpy(render), torch.from_numpy(image))
        rows.append({"view": view.file_path, "split": "test", "psnr": psnr, "ssim": ssim})
    rows += _train_rows(train, rot, trans, rot0, trans0)
    metrics, extra = _summary(rows, rot, trans, rot0, trans0)
    start, end = (
        {"rotation_error_deg": extra["initial_rotation_error_deg"],
         "translation_error": extra["initial_translation_error"]},
        {k: metrics[k] for k in ("rotation_error_deg", "translation_error")},
    )  # fmt: skip
    extra["nerfstudio"] = dict(sorted(read_eval(record["eval"]).items()))
    extra["history"] = [  # the two ends: nerfstudio keeps no per-step poses
        {"step": 0.0, **start},
        {"step": float(record["run_info"]["steps"]), **end},
    ]
    return {
        "metrics": metrics,
        "extra": extra,
        "rows": rows,
        "renders": pairs,
        "run_info": record["run_info"],
    }


HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "rotation_error_deg": False,
    "translation_error": False,
}


def evaluate_stage(evaluation: RunEvaluation, checkpoint: Path, scene: Path, renders: Path) -> dict:
    """The stage: the held-out views rendered (a figure of them to ``renders``), image and
    pose metrics, published; a nerfstudio run is read from its manifest."""
    if evaluation.settings["engine"] == "nerfstudio":
        result = evaluate_nerfstudio(checkpoint)
        run_info = result["run_info"]
    else:
        result = evaluate_run(checkpoint, read_transforms(scene), evaluation.seed)
        run_info = checkpoint_run_info(checkpoint)
    title = f"{evaluation.experiment} seed {evaluation.seed}"
    renders_figure(result["renders"], renders, title)
    m, extra = result["metrics"], result["extra"]
    evaluation.publish(m, HIGHER_IS_BETTER, run_info, pd.DataFrame(result["rows"]), **extra)
    log.info(
        "%s: PSNR %.2f SSIM %.3f; rotation error %.2f deg (from %.2f), translation %.4f "
        "(from %.4f)",
        title, m["psnr"], m["ssim"], m["rotation_error_deg"],
        extra["initial_rotation_error_deg"], m["translation_error"],
        extra["initial_translation_error"],
    )  # fmt: skip
    return m
