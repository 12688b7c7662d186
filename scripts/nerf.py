#!/usr/bin/env python
"""NeRF with camera pose refinement (BARF protocol): one subcommand per stage.

Each subcommand also runs by hand, e.g. ``python scripts/nerf.py prepare --help``. Scenes are
nerfstudio ``transforms.json`` folders, DTU scans (``cameras_sphere.npz`` + ``image/``) or
Replica sequences in NICE-SLAM's layout (``traj.txt`` + ``results/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflow.common import cli
from workflow.common.cli import log
from workflow.common.target import RunTarget


def cmd_demo(args: argparse.Namespace) -> None:
    from workflow.nerf.demo import write_demo

    manifest = write_demo(args.root, args.settings)
    log.info("demo: %d views in %s layout -> %s", manifest["views"], manifest["format"], args.root)


def cmd_prepare(args: argparse.Namespace) -> None:
    from workflow.nerf.prepare import prepare

    summary = prepare(args.format, args.root, args.out, args.settings)
    log.info(
        "%d views: %d training (poses perturbed), %d held out -> %s",
        summary["views"], summary["train"], summary["test"], args.out,
    )  # fmt: skip


def cmd_train(args: argparse.Namespace) -> None:
    if args.settings["engine"] == "nerfstudio":  # its own environment: no torch imported here
        from workflow.nerf.nerfstudio import train_nerfstudio

        target = RunTarget.from_args(args)
        train_nerfstudio(args.scene, args.settings, target, args.ns_bin, args.torch_home)
        return
    import torch

    from workflow.nerf.builtin import train_builtin
    from workflow.nerf.transforms import read_transforms

    if args.threads:
        torch.set_num_threads(args.threads)
    scene = read_transforms(args.scene)
    train_builtin(scene, args.settings, RunTarget.from_args(args))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from workflow.common.metrics import RunEvaluation
    from workflow.nerf.evaluate import evaluate_stage

    evaluation = RunEvaluation.from_args("nerf", args)
    evaluate_stage(evaluation, args.checkpoint, args.scene, args.renders)


def cmd_figures(args: argparse.Namespace) -> None:
    from workflow.nerf.plots import figures_stage

    figures_stage(args.metrics, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser, stage = cli.stage_parser(__doc__)

    cli.demo_stage(
        stage, cmd_demo, "nerf", "render the demo scene from known poses into a dataset layout"
    )

    p = stage("prepare", cmd_prepare, "a dataset -> prepared transforms.json: held-out views, "
              "seeded pose noise on the training views")  # fmt: skip
    p.add_argument("--format", choices=["nerfstudio", "dtu", "replica"], required=True)
    p.add_argument("--root", type=Path, required=True, help="the dataset's folder")
    p.add_argument("--out", type=Path, required=True, help="transforms.json to write")
    cli.add_settings(p, "nerf_prepare", "the config's nerf.prepare section")
    cli.add_image_args(p)

    p = stage("train", cmd_train, "fit a radiance field (and the poses) with the experiment's "
              "engine: builtin, or nerfstudio in its own environment")  # fmt: skip
    p.add_argument("--scene", type=Path, required=True, help="prepared transforms.json")
    cli.add_run_args(p, "nerf_train")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--ns-bin", type=Path, help="nerfstudio engine: folder of ns-train (else PATH)")
    p.add_argument("--torch-home", type=Path, help="nerfstudio engine: TORCH_HOME of the tools")
    cli.add_image_args(p)

    p = stage("evaluate", cmd_evaluate, "pose errors after Sim(3) alignment; held-out PSNR and "
              "SSIM after test-time pose alignment; renders")  # fmt: skip
    p.add_argument("--scene", type=Path, required=True, help="prepared transforms.json")
    # --checkpoint: final.ckpt, or a nerfstudio run's manifest
    cli.add_evaluate_args(p, "nerf_train")
    p.add_argument("--renders", type=Path, required=True, help="renders figure (.png) to write")
    cli.add_image_args(p)

    p = stage("figures", cmd_figures, "pose error against training step, every run")
    p.add_argument("--metrics", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="figure (.png) to write")
    return parser


if __name__ == "__main__":
    sys.exit(cli.run_cli(build_parser))
