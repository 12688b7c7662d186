"""The builtin engine: the radiance field and pose corrections trained on the shared scaffold.

Poses are handled in box coordinates (the scene box ``center +- bound`` mapped to [-1, 1]^3),
so one set of field settings serves scenes of any size. A run's checkpoint holds the box, the
initial (possibly noisy) poses, the cameras and, when the scene has them, the ground-truth
poses: evaluation needs nothing else from training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from workflow.common.loaders import resumable_loader
from workflow.common.target import RunTarget
from workflow.common.training import fit_and_publish, train_settings
from workflow.nerf.field import RadianceField, camera_rays, make_corrections, render_rays
from workflow.nerf.geometry import pose_errors
from workflow.nerf.transforms import Scene, load_views

log = logging.getLogger("lsai.nerf.builtin")

FIELD_KEYS = ("encoding", "bands", "levels", "base", "features", "width", "depth")


def to_box(poses: np.ndarray, center: np.ndarray, bound: float) -> np.ndarray:
    """Camera-to-world poses of the scene in box coordinates (centre 0, half-size 1)."""
    boxed = np.array(poses, dtype=np.float64)
    boxed[:, :3, 3] = (boxed[:, :3, 3] - center) / bound
    return boxed


def from_box(poses: np.ndarray, center: np.ndarray, bound: float) -> np.ndarray:
    scene = np.array(poses, dtype=np.float64)
    scene[:, :3, 3] = scene[:, :3, 3] * bound + center
    return scene


def as_4x4(poses: torch.Tensor | np.ndarray) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    full = np.tile(np.eye(4), (len(poses), 1, 1))
    full[:, :3] = poses[:, :3]
    return full


class RaySampler(Dataset):
    """``steps`` batches of ``rays`` random pixels of random training views (one batch an
    item; the DataLoader does not batch again)."""

    def __init__(self, images: torch.Tensor, rays: int, steps: int) -> None:
        self.images, self.rays, self.steps = images, rays, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, _: int) -> dict[str, torch.Tensor]:
        n, h, w, _c = self.images.shape
        view = torch.randint(0, n, (self.rays,))
        x, y = torch.randint(0, w, (self.rays,)), torch.randint(0, h, (self.rays,))
        return {
            "view": view,
            "pixels": torch.stack([x, y], -1).float() + 0.5,
            "rgb": self.images[view, y, x],
        }


class RayData(L.LightningDataModule):
    def __init__(self, images: torch.Tensor, rays: int, steps: int) -> None:
        super().__init__()
        self.sampler = RaySampler(images, rays, steps)

    def train_dataloader(self) -> DataLoader:
        return resumable_loader(self.sampler, None, shuffle=False)


class NerfModule(L.LightningModule):
    """Photometric loss over random rays; the pose corrections are trained (``refine_poses``)
    or frozen at zero, everything else being equal."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        intrinsics: torch.Tensor,
        poses: torch.Tensor,
        gt_poses: torch.Tensor | None,
        box: tuple[list[float], float],
        total_steps: int,
    ) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.field = RadianceField(**{k: settings[k] for k in FIELD_KEYS})
        self.corrections = make_corrections(settings, len(poses))
        self.register_buffer("intrinsics", intrinsics.float())
        self.register_buffer("poses", poses.float())  # (n, 4, 4), box coordinates
        self.register_buffer("gt_poses", gt_poses.float() if gt_poses is not None else None)
        self.box_center, self.box_bound = list(box[0]), float(box[1])
        self.total_steps = total_steps
        self.history: list[dict[str, float]] = []

    def progress(self) -> float | None:
        """Where BARF's coarse-to-fine schedule stands, or None when it is off."""
        window = self.settings["coarse_to_fine"]
        if not window:
            return None
        start, end = window
        done = self.global_step / max(self.total_steps, 1)
        return float(min(max((done - start) / max(end - start, 1e-9), 0.0), 1.0))

    def refined_poses(self) -> torch.Tensor:
        index = torch.arange(len(self.poses), device=self.poses.device)
        return self.corrections(self.poses, index)

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        view = batch["view"]
        pose = self.corrections(self.poses[view], view)
        origins, dirs = camera_rays(pose, batch["pixels"], self.intrinsics[view])
        rgb = render_rays(
            self.field, origins, dirs, self.settings["samples"], self.settings["background"],
            self.progress(), jitter=True,
        )  # fmt: skip
        loss = torch.mean((rgb - batch["rgb"]) ** 2)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        self.log("psnr", -10 * torch.log10(loss.detach()), prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        """Pose error of the current corrections (after Sim(3) alignment), per epoch: the
        error-vs-iteration curve of the report."""
        record: dict[str, float] = {"step": float(self.global_step)}
        if self.gt_poses is not None:
            with torch.no_grad():
                current = as_4x4(self.refined_poses().cpu())
            rot, trans = pose_errors(current, as_4x4(self.gt_poses.cpu()))
            record.update(  # translation in scene units, as the evaluation reports it
                rotation_error_deg=float(rot.mean()),
                translation_error=float(trans.mean()) * self.box_bound,
            )
            self.log("rotation_error_deg", record["rotation_error_deg"])
            self.log("translation_error", record["translation_error"])
        loss = self.trainer.callback_metrics.get("train_loss")
        if loss is not None:
            record["train_psnr"] = float(-10 * torch.log10(loss))
        self.history.append(record)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nerf"] = {
            "settings": self.settings,
            "box": [self.box_center, self.box_bound],
            "total_steps": self.total_steps,
            "history": self.history,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("nerf", {}).get("history", []))

    def configure_optimizers(self):
        s = self.settings
        groups = [{"params": self.field.parameters(), "lr": s["lr"]}]
        decays = [s["lr_final"] / s["lr"]]
        if s["refine_poses"]:
            groups.append({"params": self.corrections.parameters(), "lr": s["pose_lr"]})
            decays.append(s["pose_lr_final"] / s["pose_lr"])
        else:
            self.corrections.requires_grad_(False)
        optimizer = torch.optim.Adam(groups)
        total = max(self.total_steps, 1)
        warmup = s["pose_warmup"] * total

        def decay(ratio: float, hold: float = 0.0):
            return lambda step: 0.0 if step < hold else ratio ** min(step / total, 1.0)

        factors = [decay(decays[0])] + [decay(d, warmup) for d in decays[1:]]
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return [optimizer], [{"scheduler": schedule, "interval": "step"}]


def scene_arrays(scene: Scene, split: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Images, cameras and box-coordinate poses (initial and ground truth) of a split."""
    views = scene.split(split)
    images, cameras = load_views(scene, views, settings["downscale"])
    center = np.asarray(settings["box"]["center"], dtype=np.float64)
    bound = float(settings["box"]["bound"])
    gts = [v.gt_c2w for v in views]
    return {
        "views": views,
        "images": torch.from_numpy(images),
        "intrinsics": torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cameras]),
        "poses": torch.from_numpy(to_box(np.stack([v.c2w for v in views]), center, bound)),
        "gt_poses": None
        if any(g is None for g in gts)
        else torch.from_numpy(to_box(np.stack(gts), center, bound)),
        "box": (center.tolist(), bound),
    }


def train_builtin(scene: Scene, settings: Mapping[str, Any], target: RunTarget) -> None:
    """Fit the field (and the poses, when refining) on the scene's training views; publish
    the checkpoint with the pose-error history in its run info."""
    data = scene_arrays(scene, "train", settings)
    steps = int(settings["steps_per_epoch"])
    total = steps * int(settings["max_epochs"])
    log.info(
        "%d training views of %dx%d, %d steps of %d rays, pose refinement %s",
        len(data["views"]), data["images"].shape[2], data["images"].shape[1], total,
        settings["rays"], "on" if settings["refine_poses"] else "off",
    )  # fmt: skip
    L.seed_everything(target.seed, workers=True, verbose=False)
    module = NerfModule(
        settings, data["intrinsics"], data["poses"], data["gt_poses"], data["box"], total
    )
    run = train_settings(
        settings, target,
        inputs=[scene.root / "transforms.json", *(scene.image_path(v) for v in scene.views)],
        trainer_overrides={"limit_val_batches": 0, "num_sanity_val_steps": 0},
        monitor="train_loss", mode="min", log_every_n_steps=max(1, min(50, steps)),
        precision="32-true",  # pose gradients are small: no bf16 on the GPU either
    )  # fmt: skip
    # The last epoch, not the lowest loss: with pose refinement, later is better aligned.
    result = fit_and_publish(
        module, RayData(data["images"], int(settings["rays"]), steps), run, target.final,
        lambda _: {"history": module.history, "engine": "builtin"}, last=True,
    )  # fmt: skip
    if result.is_global_zero:
        if module.history and "rotation_error_deg" in module.history[-1]:
            log.info(
                "pose error after training: %.3f deg, %.4f scene units",
                module.history[-1]["rotation_error_deg"], module.history[-1]["translation_error"],
            )  # fmt: skip
