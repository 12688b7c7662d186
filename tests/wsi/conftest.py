"""WSI fixtures: one small demo dataset and its tilings, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from workflow.wsi.demo import DemoSettings, write_demo

# 4 slides of 4096 x 4096 px at x40: 2 tumour, 2 normal; about a second each to write.
SMALL = DemoSettings(slides=4, seed=11)


@pytest.fixture(scope="session")
def wsi_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("camelyon16")
    write_demo(root, SMALL)
    return root


@pytest.fixture(scope="session")
def wsi_manifest(wsi_demo: Path) -> dict:
    return json.loads((wsi_demo / "manifest.json").read_text())


@pytest.fixture(scope="session")
def wsi_tiled(wsi_demo: Path, wsi_manifest: dict, tmp_path_factory: pytest.TempPathFactory):
    """slide_id -> (HDF5 path, thumbnail PNG, mask PNG) from the tiling stage."""
    from workflow.wsi.tiling import tile_file

    out = tmp_path_factory.mktemp("tiles")
    files = {}
    for entry in wsi_manifest["slides"]:
        sid = entry["slide_id"]
        paths = (out / f"{sid}.h5", out / f"{sid}.thumb.png", out / f"{sid}.mask.png")
        tile_file(wsi_demo / entry["file"], paths[0], thumbnail_png=paths[1], mask_png=paths[2])
        files[sid] = paths
    return files


def write_plain_slide(path: Path, image: np.ndarray, mpp: float | None = 0.25, levels: int = 3):
    """A pyramidal JPEG-tiled TIFF of ``image`` as OpenSlide reads it; ``mpp=None`` writes no
    resolution at all (a slide whose magnification is unknown)."""
    with tifffile.TiffWriter(path) as tif:
        for k in range(levels):
            resolution = (
                {"resolution": (1e4 / (mpp * 2**k),) * 2, "resolutionunit": "CENTIMETER"}
                if mpp
                else {}
            )
            tif.write(
                image[:: 2**k, :: 2**k],
                photometric="rgb",
                tile=(256, 256),
                compression="jpeg",
                subfiletype=int(k > 0),
                **resolution,
            )
