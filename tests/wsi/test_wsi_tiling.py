"""Tissue segmentation and multi-scale tiling: the mask, the tile hierarchy, the HDF5 file."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.wsi.conftest import write_plain_slide
from tests.wsi.reference_tiling import naive_tiling
from workflow.common.errors import InputError
from workflow.wsi.segment import (
    _small_components,
    binary_closing,
    mask_source,
    median3,
    otsu,
    saturation,
    saturation16,
    segment_tissue,
)
from workflow.wsi.slide import open_slide
from workflow.wsi.tiling import (
    integral_image,
    read_tiling,
    tile_slide,
    tissue_fraction,
    write_tiling,
)


def test_tissue_fraction_is_exact_for_unaligned_squares():
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=(40, 50)) > 0.6
    integral = integral_image(mask)
    up = 8  # brute force: each mask pixel as 8 x 8 sub-pixels, squares on the sub-pixel grid
    fine = np.kron(mask, np.ones((up, up), bool))
    for _ in range(50):
        side = int(rng.integers(1, 120))
        x, y = (int(v) for v in rng.integers(-30, 420, size=2))
        got = tissue_fraction(integral, up, np.array([[x, y]]), side)[0]
        xs, ys = slice(max(x, 0), max(x + side, 0)), slice(max(y, 0), max(y + side, 0))
        expected = fine[ys, xs].sum() / side**2  # beyond the mask counts as background
        assert got == pytest.approx(expected, abs=1e-5)


def test_mask_matches_the_planted_tissue(wsi_demo, wsi_manifest, wsi_tiled):
    for entry in wsi_manifest["slides"]:
        with open_slide(wsi_demo / entry["file"]) as slide:
            tissue = segment_tissue(slide)
            level, factor = mask_source(slide, 16.0)
            assert tissue.downsample == slide.level_downsamples[level] * factor
            assert 4 <= slide.mpp * tissue.downsample <= 16
            assert tissue.mask.shape == (slide.dimensions[1] // tissue.downsample,) * 2
        assert tissue.fraction == pytest.approx(entry["tissue_fraction"], abs=0.05)
        # tumour discs (always inside tissue) are in the mask; the glass corners are not
        for region in entry["tumor_regions"]:
            i, j = (int(region[k] / tissue.downsample) for k in ("y", "x"))
            assert tissue.mask[i, j]
        # the PNGs for the report: same mask, same size as the thumbnail
        _, thumb_png, mask_png = wsi_tiled[entry["slide_id"]]
        png = np.asarray(Image.open(mask_png)) > 0
        assert np.array_equal(png, tissue.mask)
        assert Image.open(thumb_png).size == (png.shape[1], png.shape[0])


def _pyramid(mpp, downsamples):
    return SimpleNamespace(mpp=mpp, level_downsamples=tuple(float(d) for d in downsamples))


@pytest.mark.parametrize(
    ("mpp", "downsamples", "expected"),
    [
        # Camelyon16 (x2 pyramid) and a x4 pyramid: the 16 um level is read as it is, not a
        # finer one averaged down
        (0.25, [2**k for k in range(10)], (6, 1)),
        (0.25, [1, 4, 16, 64, 256.41], (3, 1)),
        (0.243, [2**k for k in range(10)], (6, 1)),  # 15.6 um
        (0.2527, [1, 4.0002, 16.001, 64.01], (3, 1)),  # 16.2 um: within the tolerance
        # no level near 16 um: the finest level under it, block-averaged to about 16 um
        (0.25, [1, 2, 4], (2, 16)),
        (0.25, [1, 4, 16], (2, 4)),
        (0.5, [1, 4, 16, 128], (2, 2)),  # 32 um is too coarse; 8 um x 2
        (0.25, [1, 4, 16, 100], (2, 4)),  # 25 um is too coarse
        (32.0, [1, 2], (0, 1)),  # even level 0 is coarser than the target
    ],
)
def test_mask_level_reads_the_fewest_pixels(mpp, downsamples, expected):
    assert mask_source(_pyramid(mpp, downsamples), 16.0) == expected


def test_mask_level_on_real_pyramids(tmp_path):
    """Many levels: the 16 um one is read (a 64 px mask of a 4096 px slide); few levels: the
    coarsest is block-averaged to the same mask."""
    rng = np.random.default_rng(3)
    image = (np.array([244, 243, 246]) + rng.normal(0, 2, (4096, 4096, 3))).clip(0, 255)
    image[1024:3072, 512:2560] = [225, 158, 198]
    masks = {}
    for levels in (7, 3):
        path = tmp_path / f"levels{levels}.tif"
        write_plain_slide(path, image.astype(np.uint8), levels=levels)
        with open_slide(path) as slide:
            tissue = segment_tissue(slide)
        assert (tissue.level, tissue.downsample) == ((6, 64.0) if levels == 7 else (2, 64.0))
        assert tissue.mask.shape == (64, 64)
        masks[levels] = tissue.mask
    assert masks[7][17:47, 9:39].all() and masks[3][17:47, 9:39].all()
    assert not masks[7][:, 44:].any() and not masks[3][:, 44:].any()
    assert (masks[7] != masks[3]).mean() < 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.uint16])
def test_median3_is_scipys_median(dtype):
    rng = np.random.default_rng(4)
    for shape in ((1, 1), (2, 5), (37, 53)):
        image = (rng.uniform(size=shape) * 255).astype(dtype)
        assert np.array_equal(median3(image), ndimage.median_filter(image, size=3))


def test_fast_mask_steps_are_the_librarys(tmp_path):
    """The segmentation's own closing, small-component and Otsu steps give exactly what
    skimage gives, on random blobby masks and saturation images."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects

    rng = np.random.default_rng(8)
    for case in range(40):
        shape = tuple(rng.integers(8, 70, size=2))
        mask = ndimage.gaussian_filter(rng.uniform(size=shape), 2) > 0.5
        radius, size = int(rng.integers(1, 5)), int(rng.integers(1, 40))
        assert np.array_equal(binary_closing(mask, radius), closing(mask, disk(radius)))
        kept = mask.copy()
        kept[_small_components(mask, size)] = False
        assert np.array_equal(kept, remove_small_objects(mask, max_size=size))
        filled = mask.copy()
        filled[_small_components(~mask, size)] = True
        assert np.array_equal(filled, remove_small_holes(mask, max_size=size))
        sat = rng.beta(1 + case % 3, 4, size=shape).astype(np.float32)
        assert otsu(sat) == pytest.approx(threshold_otsu(sat), abs=1e-6)
        # a histogram (distinct values with their counts) gives the threshold of its pixels
        steps = (sat * 1000).astype(np.uint16)
        values, counts = np.unique(steps, return_counts=True)
        as_pixels = steps.astype(np.float32) / 1000
        assert otsu(values.astype(np.float32) / 1000, counts) == pytest.approx(
            threshold_otsu(as_pixels), abs=1e-6
        )


def test_saturation16_is_hsv_saturation_in_steps():
    """The uint16 saturation is skimage's HSV saturation to within half a step, black
    pixels included."""
    from skimage.color import rgb2hsv

    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    rgb[0, :4] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [1, 0, 0]]
    steps = saturation16(rgb)
    assert steps.dtype == np.uint16
    expected = rgb2hsv(rgb)[..., 1]
    assert np.abs(steps / 65535 - expected).max() <= 0.5 / 65535 + 1e-7
    assert list(steps[0, :4]) == [0, 0, 65535, 65535]


def test_blank_slide_has_no_tissue(tmp_path):
    rng = np.random.default_rng(1)
    glass = (np.array([244, 243, 246]) + rng.normal(0, 2, (2048, 2048, 3))).clip(0, 255)
    path = tmp_path / "blank.tif"
    write_plain_slide(path, glass.astype(np.uint8))
    with open_slide(path) as slide, pytest.raises(InputError, match="never reaches") as err:
        segment_tissue(slide)  # Otsu alone would split the glass's noise into "tissue"
    assert err.value.path == str(path)
    # a speck of dust (saturated, but far below the minimal tissue area) is not tissue either
    glass[1000:1240, 1000:1240] = [225, 158, 198]  # 60 x 60 um
    write_plain_slide(path, glass.astype(np.uint8))
    with open_slide(path) as slide, pytest.raises(InputError, match="no saturated region"):
        segment_tissue(slide)


def test_tissue_everywhere_is_all_tissue(tmp_path):
    rng = np.random.default_rng(2)
    pink = (np.array([225, 158, 198]) + rng.normal(0, 6, (2048, 2048, 3))).clip(0, 255)
    path = tmp_path / "full.tif"
    write_plain_slide(path, pink.astype(np.uint8))
    with open_slide(path) as slide:
        assert segment_tissue(slide).fraction > 0.99


def test_pale_tissue_and_half_covered_border_pixels(tmp_path):
    """Hysteresis keeps pale tissue (saturation 0.10, under Otsu's threshold) touching
    saturated tissue; a border pixel is tissue when about half of it is. At 16 um/px a mask
    pixel is 64 level-0 px: purple from x = 236 (column 3 is 31% tissue, column 21 88%) to
    1400, then pale to 1792; rows 256 - 1792 are aligned to mask pixels (4 - 27). (Pale
    border pixels within BORDER_UM of purple are judged against the purple and dropped: the
    first and last rows of the pale part are not asserted.)"""
    rng = np.random.default_rng(5)
    image = np.empty((2048, 2048, 3), np.float64)
    image[:] = [244, 243, 246]
    image[256:1792, 236:1400] = [128, 78, 168]  # saturation 0.54
    image[256:1792, 1400:1792] = [236, 212, 228]  # pale: saturation 0.10
    image = (image + rng.normal(0, 3, image.shape)).clip(0, 255).astype(np.uint8)
    path = tmp_path / "pale.tif"
    write_plain_slide(path, image)
    with open_slide(path) as slide:
        tissue = segment_tissue(slide, target_mpp=16.0)
    mask = tissue.mask
    assert tissue.downsample == 64 and mask.shape == (32, 32)
    assert tissue.threshold > 0.12  # Otsu alone would drop the pale tissue (0.10)
    assert mask[5:27, 4:28].all()  # the pale part and the 88% column are tissue
    assert mask[4:28, 5:21].all()
    assert not mask[:, :4].any() and not mask[:, 28:].any()  # the 31% column is not
    assert not mask[:4].any() and not mask[28:].any()


def _footprint_fraction(mask, ds, x, y, footprint):
    """Reference: count mask pixels (footprints here are whole mask pixels)."""
    x0, y0, side = x / ds, y / ds, footprint / ds
    assert side == int(side) and x0 == int(x0) and y0 == int(y0)
    window = mask[int(y0) : int(y0 + side), int(x0) : int(x0 + side)]
    return window.sum() / side**2


def _children(parent, footprint):
    return [
        (int(px) + dx * footprint, int(py) + dy * footprint)
        for px, py in parent.coords
        for dy in (0, 1)
        for dx in (0, 1)
    ]


def _check_hierarchy(tiling, tissue, width, height, keep_ancestors):
    def enough(xy, footprint):
        return _footprint_fraction(tissue.mask, tissue.downsample, *xy, footprint) >= 0.25

    assert [s.name for s in tiling.scales] == ["x5", "x10", "x20"]
    coarse, *finer = tiling.scales
    assert (coarse.parent == -1).all()
    # what must be kept, computed here from the mask alone, on each scale's full grid
    sizes = (2048, 1024, 512)
    grids = {f: [(x, y) for y in range(0, height, f) for x in range(0, width, f)] for f in sizes}

    def up(cell, f):  # the coarser cell holding a cell of size f
        return (cell[0] // (2 * f) * 2 * f, cell[1] // (2 * f) * 2 * f)

    if keep_ancestors:  # every x20 cell with tissue; coarser cells with tissue or kept children
        expected = {512: {c for c in grids[512] if enough(c, 512)}}
        for f in (1024, 2048):
            below = {up(c, f // 2) for c in expected[f // 2]}
            expected[f] = {c for c in grids[f] if enough(c, f) or c in below}
    else:  # strictly top-down: tissue of its own and a kept parent
        expected = {2048: {c for c in grids[2048] if enough(c, 2048)}}
        for f in (1024, 512):
            expected[f] = {c for c in grids[f] if enough(c, f) and up(c, f) in expected[2 * f]}
    for scale, f in zip(tiling.scales, sizes, strict=True):
        assert scale.footprint == f
        assert {tuple(c) for c in scale.coords.tolist()} == expected[f], scale.name
        assert len(expected[f]) == len(scale)  # no duplicates
    for parent, child in zip(tiling.scales, finer, strict=False):
        assert child.footprint * 2 == parent.footprint
        assert len(child) <= 4 * len(parent)
        assert ((child.parent >= 0) & (child.parent < len(parent))).all()
        p = parent.coords[child.parent]
        # each child's footprint inside its parent's, on the parent's 2 x 2 grid
        assert (child.coords >= p).all()
        assert (child.coords + child.footprint <= p + parent.footprint).all()
        assert ((child.coords - p) % child.footprint == 0).all()
        assert set(map(tuple, child.coords.tolist())) <= set(_children(parent, child.footprint))
        # children listed parent by parent
        assert (np.diff(child.parent) >= 0).all()
    for scale in tiling.scales:
        ref = [
            _footprint_fraction(tissue.mask, tissue.downsample, *c, scale.footprint)
            for c in scale.coords
        ]
        assert np.allclose(scale.tissue, ref, atol=1e-5)
    assert (tiling.scales[-1].tissue >= 0.25).all()  # x20: background dropped
    if not keep_ancestors:
        assert all((s.tissue >= 0.25).all() for s in tiling.scales)


def test_hierarchy_and_tissue_filter(wsi_demo, wsi_manifest, wsi_tiled):
    for entry in wsi_manifest["slides"]:
        tiling = read_tiling(wsi_tiled[entry["slide_id"]][0])
        with open_slide(wsi_demo / entry["file"]) as slide:
            tissue = segment_tissue(slide)
            strict = tile_slide(slide, tissue, keep_ancestors=False)
        width, height = entry["width"], entry["height"]
        _check_hierarchy(tiling, tissue, width, height, keep_ancestors=True)
        _check_hierarchy(strict, tissue, width, height, keep_ancestors=False)
        counts = tiling.counts
        assert 1 <= counts["x5"] <= 4 and counts["x5"] <= counts["x10"] <= counts["x20"] <= 64
        assert counts["x20"] < 0.8 * 64  # background dropped: far fewer than the 8 x 8 grid
        assert all(strict.counts[k] <= counts[k] for k in counts)
        # every tumour focus keeps x20 tiles over it
        for region in entry["tumor_regions"]:
            x20 = tiling["x20"]
            cx, cy = region["x"], region["y"]
            inside = (x20.coords <= [cx, cy]) & (x20.coords + x20.footprint > [cx, cy])
            assert inside.all(axis=1).any(), region


def test_x20_tiles_lie_in_tissue(wsi_demo, wsi_manifest, wsi_tiled):
    """Read every kept x20 tile's pixels: a good part of each is saturated tissue, and the
    naive per-tile reference keeps nearly the same tiles."""
    for entry in wsi_manifest["slides"]:
        tiling = read_tiling(wsi_tiled[entry["slide_id"]][0])
        x20 = tiling["x20"]
        with open_slide(wsi_demo / entry["file"]) as slide:
            for x, y in x20.coords:
                tile = slide.read_rgb((int(x), int(y)), x20.level, (x20.read_size,) * 2)
                assert (saturation(tile) > 0.08).mean() > 0.15
            naive, _ = naive_tiling(slide)
        fast, slow = {tuple(c) for c in x20.coords.tolist()}, {tuple(c) for c in naive.tolist()}
        # mask (smoothed, 8 um/px) and per-tile pixels disagree only on border tiles
        assert len(fast & slow) >= 0.85 * len(fast | slow), (len(fast & slow), len(fast | slow))


def test_hdf5_layout(wsi_demo, wsi_manifest, wsi_tiled):
    entry = wsi_manifest["slides"][0]
    path = wsi_tiled[entry["slide_id"]][0]
    with h5py.File(path, "r") as h5:
        assert h5.attrs["slide_id"] == entry["slide_id"]
        assert h5.attrs["slide_path"] == str(wsi_demo / entry["file"])
        assert h5.attrs["mpp"] == 0.25
        assert list(h5.attrs["scales"]) == ["x5", "x10", "x20"]
        for name, mag, level in (("x5", 5, 3), ("x10", 10, 2), ("x20", 20, 1)):
            g = h5[name]
            n = g["coords"].shape[0]
            assert g["coords"].dtype == np.int64 and g["coords"].shape == (n, 2)
            assert g["parent"].dtype == np.int64 and g["parent"].shape == (n,)
            assert g["tissue"].dtype == np.float32 and g["tissue"].shape == (n,)
            assert g.attrs["magnification"] == mag and g.attrs["level"] == level
            assert g.attrs["downsample"] == 40 / mag and g.attrs["read_size"] == 256
            assert g.attrs["patch_size"] == 256
    assert not list(path.parent.glob(".*"))  # atomic writes leave no temporary files


def test_read_tiling_round_trip_and_errors(wsi_demo, wsi_manifest, tmp_path):
    entry = wsi_manifest["slides"][-1]
    with open_slide(wsi_demo / entry["file"]) as slide:
        tiling = tile_slide(slide, segment_tissue(slide), slide_id="renamed")
    write_tiling(tiling, tmp_path / "t.h5")
    back = read_tiling(tmp_path / "t.h5")
    assert back.slide_id == "renamed" and back.counts == tiling.counts
    for a, b in zip(tiling.scales, back.scales, strict=True):
        assert np.array_equal(a.coords, b.coords) and np.array_equal(a.parent, b.parent)
        assert np.array_equal(a.tissue, b.tissue)
        assert (a.level, a.read_size, a.footprint) == (b.level, b.read_size, b.footprint)
    with pytest.raises(InputError, match="not found"):
        read_tiling(tmp_path / "missing.h5")
    (tmp_path / "bad.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_tiling(tmp_path / "bad.h5")


def test_tiling_follows_the_mpp_override(wsi_demo, wsi_manifest):
    """Pretend the slide was scanned at x20: x20 tiles come from level 0, half the size."""
    path = wsi_demo / wsi_manifest["slides"][0]["file"]
    with open_slide(path, mpp=0.5) as slide:
        tiling = tile_slide(slide, segment_tissue(slide))
    assert [(s.level, s.footprint) for s in tiling.scales] == [(2, 1024), (1, 512), (0, 256)]
    with open_slide(path) as slide:
        normal = tile_slide(slide, segment_tissue(slide))
    assert tiling.counts["x20"] > normal.counts["x20"]  # smaller tiles, more of them


def test_per_scale_min_tissue(wsi_demo, wsi_manifest):
    path = wsi_demo / wsi_manifest["slides"][0]["file"]
    with open_slide(path) as slide:
        tissue = segment_tissue(slide)
        strict = tile_slide(slide, tissue, min_tissue=0.25)
        loose = tile_slide(slide, tissue, min_tissue={5: 0.0, 10: 0.25, 20: 0.25})
        with pytest.raises(ValueError, match="no entry for x20"):
            tile_slide(slide, tissue, min_tissue={5: 0.1, 10: 0.25})
    assert loose.counts["x20"] >= strict.counts["x20"]
    assert loose.attrs["min_tissue"] == [0.0, 0.25, 0.25]
