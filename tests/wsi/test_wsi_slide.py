"""Opening slides and resolving magnifications: from MPP or objective power, never from a level
index; every damaged input is an InputError naming the file."""

from __future__ import annotations

import shutil

import numpy as np
import openslide
import pytest
import tifffile

from tests.wsi.conftest import write_plain_slide
from workflow.common.errors import InputError
from workflow.wsi.slide import (
    best_level,
    magnification_mpp,
    open_slide,
    plan_scales,
    resolve_mpp,
    scale_read,
)

X40_LEVELS = (1.0, 2.0, 4.0, 8.0)


def test_magnification_convention():
    assert [magnification_mpp(m) for m in (40, 20, 10, 5)] == [0.25, 0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527"}, (0.2527, "mpp-x")),
        ({"openslide.objective-power": "40"}, (0.25, "objective-power")),
        ({"openslide.objective-power": "20"}, (0.5, "objective-power")),
        # mpp-x wins over the nominal objective; garbage falls back to the objective
        ({"openslide.mpp-x": "0.243", "openslide.objective-power": "20"}, (0.243, "mpp-x")),
        ({"openslide.mpp-x": "nan", "openslide.objective-power": "40"}, (0.25, "objective-power")),
    ],
)
def test_resolve_mpp(properties, expected):
    mpp, source = resolve_mpp(properties, "s.svs")
    assert mpp == pytest.approx(expected[0]) and source == expected[1]


def test_resolve_mpp_override_and_missing():
    assert resolve_mpp({}, "s.tif", override=0.5) == (0.5, "override")
    assert resolve_mpp({"openslide.mpp-x": "0.25"}, "s.tif", override=1.0)[0] == 1.0
    with pytest.raises(InputError, match="no resolution") as err:
        resolve_mpp({"openslide.vendor": "generic-tiff"}, "s.tif")
    assert err.value.path == "s.tif"
    with pytest.raises(InputError, match="positive"):
        resolve_mpp({}, "s.tif", override=0)


def test_override_equal_to_the_slides_own_keeps_its_source():
    """The tile stage passes the segment stage's resolution back for every slide: that is the
    slide's own, not an override; only a value the slide does not give is one."""
    own = {"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527"}
    assert resolve_mpp(own, "s.tif", override=0.2527) == (0.2527, "mpp-x")
    assert resolve_mpp(own, "s.tif", override=0.5) == (0.5, "override")
    power = {"openslide.objective-power": "20"}
    assert resolve_mpp(power, "s.tif", override=0.5) == (0.5, "objective-power")
    assert resolve_mpp({}, "s.tif", override=0.5) == (0.5, "override")


def test_levels_follow_the_resolution_not_the_index():
    # x40 scan with a 2x pyramid: x20 at level 1, x10 at 2, x5 at 3, each read at 256 px
    got = [scale_read(X40_LEVELS, 0.25, m) for m in (20, 10, 5)]
    assert [(r.level, r.read_size, r.downsample) for r in got] == [
        (1, 256, 2.0),
        (2, 256, 4.0),
        (3, 256, 8.0),
    ]
    # the same pyramid scanned at x20 (0.5 um/px): every scale moves one level finer
    got = [scale_read(X40_LEVELS, 0.5, m) for m in (20, 10, 5)]
    assert [(r.level, r.read_size) for r in got] == [(0, 256), (1, 256), (2, 256)]
    # a 4x pyramid (Aperio-like, 1/4/16): x10 and x5 read level 0 and 1 at a larger size
    got = [scale_read((1.0, 4.0, 16.0), 0.25, m) for m in (20, 10, 5)]
    assert [(r.level, r.read_size, r.footprint) for r in got] == [
        (0, 512, 512),
        (1, 256, 1024),
        (1, 512, 2048),
    ]
    # objective power only: x40 -> 0.25 um/px, same answer as the MPP
    mpp, _ = resolve_mpp({"openslide.objective-power": "40"})
    assert scale_read(X40_LEVELS, mpp, 20).level == 1


def test_best_level_never_upsamples():
    assert best_level(X40_LEVELS, 2.0) == 1
    assert best_level(X40_LEVELS, 3.9) == 1  # level 2 (4.0) would need upsampling
    assert best_level(X40_LEVELS, 4.02) == 2  # within 1% tolerance
    assert best_level(X40_LEVELS, 100.0) == 3
    assert best_level((1.0, 4.000244, 16.0009), 4.0) == 1  # scanners' rounded downsamples


def test_plan_scales_nest_exactly_for_odd_mpp():
    plans = plan_scales((1.0, 4.0002, 16.001, 32.004), 0.2527, (20, 5, 10))
    assert [p.name for p in plans] == ["x5", "x10", "x20"]
    fine = plans[-1]
    assert fine.footprint == round(256 * 0.5 / 0.2527)
    assert [p.footprint for p in plans] == [4 * fine.footprint, 2 * fine.footprint, fine.footprint]
    for p in plans:
        assert p.downsample == pytest.approx(p.footprint / 256)
        level_ds = (1.0, 4.0002, 16.001, 32.004)[p.level]
        assert level_ds <= p.downsample * 1.01
        assert p.read_size == round(p.footprint / level_ds)
    with pytest.raises(ValueError, match="divide"):
        plan_scales(X40_LEVELS, 0.25, (5, 7))


def test_magnification_finer_than_the_scan_is_refused():
    with pytest.raises(InputError, match="x20 needs 0.5 um/px"):
        scale_read(X40_LEVELS, 1.0, 20, path="low.tif")


# --------------------------------------------------------------------------- opening files
@pytest.fixture
def demo_slide(wsi_demo, wsi_manifest):
    return wsi_demo / wsi_manifest["slides"][0]["file"]


def test_open_demo_slide(demo_slide):
    with open_slide(demo_slide) as slide:
        assert slide.mpp == 0.25 and slide.mpp_source == "mpp-x"
        assert slide.level_count >= 3
        assert [s.level for s in slide.scales((5, 10, 20))] == [3, 2, 1]
        rgb = slide.read_rgb((0, 0), 0, (64, 32))
        assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
        # outside the slide: white, not transparent black
        w, h = slide.dimensions
        assert slide.read_rgb((w - 8, h - 8), 0, (16, 16))[12, 12].tolist() == [255, 255, 255]
    with open_slide(demo_slide, mpp=0.5) as slide:  # an override changes every level choice
        assert [s.level for s in slide.scales((5, 10, 20))] == [2, 1, 0]


def test_tiles_record_where_the_mpp_came_from(demo_slide, tmp_path):
    from workflow.wsi.segment import segment_tissue
    from workflow.wsi.tiling import read_tiling, tile_file

    with open_slide(demo_slide) as slide:
        mpp = slide.mpp  # what the segment stage records and the tile stage passes back
    tile_file(demo_slide, tmp_path / "own.h5", mpp=mpp)
    assert read_tiling(tmp_path / "own.h5").attrs["mpp_source"] == "mpp-x"
    tile_file(demo_slide, tmp_path / "x20.h5", mpp=0.5)
    assert read_tiling(tmp_path / "x20.h5").attrs["mpp_source"] == "override"
    with open_slide(demo_slide, mpp=mpp) as slide:
        assert slide.mpp_source == "mpp-x" and segment_tissue(slide).fraction > 0


def test_missing_slide(tmp_path):
    with pytest.raises(InputError, match="slide not found") as err:
        open_slide(tmp_path / "normal_999.tif")
    assert err.value.path.endswith("normal_999.tif")


def test_text_file_renamed_tif(tmp_path):
    path = tmp_path / "tumor_001.tif"
    path.write_text("slide_id,label\ntumor_001,tumor\n")
    with pytest.raises(InputError, match="not a whole-slide image") as err:
        open_slide(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.97, 0.999])
def test_truncated_tiff(demo_slide, tmp_path, keep):
    data = demo_slide.read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="truncated|damaged") as err:
        open_slide(path)
    assert err.value.path == str(path)


def test_truncation_openslide_does_not_notice(tmp_path):
    """Levels stored smallest first: OpenSlide opens the file (its quick hash reads only the
    smallest level), yet level 0's last tiles are gone; the TIFF check names the file."""
    rng = np.random.default_rng(0)
    image = (200 + rng.normal(0, 10, (2048, 2048, 3))).clip(0, 255).astype(np.uint8)
    path = tmp_path / "reversed.tif"
    with tifffile.TiffWriter(path) as tif:
        for k in (2, 1, 0):
            tif.write(
                image[:: 2**k, :: 2**k], photometric="rgb", tile=(256, 256), compression="jpeg"
            )
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.9)])
    openslide.OpenSlide(str(path)).close()
    with pytest.raises(InputError, match="truncated TIFF") as err:
        open_slide(path, mpp=0.25)
    assert err.value.path == str(path)


def test_corrupt_tile_fails_on_read(demo_slide, tmp_path):
    """Garbage inside a tile (file length intact): the read that hits it names the file."""
    path = tmp_path / "corrupt.tif"
    shutil.copy(demo_slide, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        index = int(np.argmax(page.databytecounts))  # the largest level-0 tile
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        tiles_across = -(-page.imagewidth // page.tilewidth)
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * count)
    location = ((index % tiles_across) * 256, (index // tiles_across) * 256)
    with open_slide(path) as slide, pytest.raises(InputError, match="unreadable tile") as err:
        slide.read_rgb(location, 0, (256, 256))
    assert err.value.path == str(path)


def test_slide_without_mpp(tmp_path):
    path = tmp_path / "nompp.tif"
    write_plain_slide(path, np.full((1024, 1024, 3), 230, np.uint8), mpp=None)
    assert openslide.OpenSlide(str(path)).level_count == 3  # a valid slide...
    with pytest.raises(InputError, match="no resolution") as err:
        open_slide(path)  # ...without a resolution
    assert err.value.path == str(path)
    with open_slide(path, mpp=0.5) as slide:
        assert (slide.mpp, slide.mpp_source) == (0.5, "override")
