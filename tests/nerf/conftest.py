"""Small demo scenes written once per test module."""

from pathlib import Path

import pytest

from workflow.nerf.demo import write_demo

DEMO = {"format": "nerfstudio", "views": 16, "image_size": 24, "fov_deg": 60, "radius": 3.2,
        "seed": 0}  # fmt: skip


def demo_scene(root: Path, **overrides) -> Path:
    write_demo(root, {**DEMO, **overrides})
    return root


@pytest.fixture(scope="module")
def nerfstudio_demo(tmp_path_factory) -> Path:
    return demo_scene(tmp_path_factory.mktemp("nerfstudio"))
