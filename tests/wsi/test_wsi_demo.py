"""The demo dataset: real Camelyon16 format (what OpenSlide and tifffile see), determinism,
labels, and the planted tumour texture that only fine scales can see."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from workflow.wsi.demo import DemoSettings, pyramid, write_demo
from workflow.wsi.demo_render import render_slide
from workflow.wsi.labels import read_labels
from workflow.wsi.slide import open_slide


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_openslide_sees_every_level_and_the_mpp(wsi_demo, wsi_manifest):
    settings = wsi_manifest["settings"]
    for entry in wsi_manifest["slides"]:
        osr = openslide.OpenSlide(str(wsi_demo / entry["file"]))
        assert osr.level_count == settings["levels"] >= 3
        assert osr.dimensions == (settings["width"], settings["height"])
        assert osr.level_downsamples == pytest.approx([2.0**k for k in range(osr.level_count)])
        assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
        assert float(osr.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.25)
        osr.close()


def test_levels_are_top_level_jpeg_tiled_pages(wsi_demo, wsi_manifest):
    path = wsi_demo / wsi_manifest["slides"][0]["file"]
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert len(pages) == wsi_manifest["settings"]["levels"]
        for k, page in enumerate(pages):
            assert page.is_tiled and (page.tilewidth, page.tilelength) == (256, 256)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.subfiletype == (0 if k == 0 else 1)
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            x_res = page.tags["XResolution"].value
            assert 1e4 * x_res[1] / x_res[0] == pytest.approx(0.25 * 2**k)


def test_openslide_pixels_match_the_rendered_slide(tmp_path):
    settings = DemoSettings(slides=1, width=1024, height=1024, levels=3, seed=4)
    write_demo(tmp_path, settings)
    path = next((tmp_path / "slides").glob("*.tif"))
    label = path.stem.startswith("tumor")
    expected = pyramid(render_slide(np.random.default_rng([4, 0]), settings, label).image, 3)
    with open_slide(path) as slide:
        for level in range(3):
            w, h = slide.level_dimensions[level]
            got = slide.read_rgb((0, 0), level, (w, h)).astype(int)
            # JPEG at quality 90: small mean error, colours preserved
            assert np.abs(got - expected[level]).mean() < 4
            assert np.abs(got.mean((0, 1)) - expected[level].mean((0, 1))).max() < 1.5


def test_demo_is_deterministic(tmp_path):
    settings = DemoSettings(slides=2, width=1024, height=1024, levels=3, seed=7)
    write_demo(tmp_path / "a", settings)
    write_demo(tmp_path / "b", settings)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    other = DemoSettings(slides=2, width=1024, height=1024, levels=3, seed=8)
    write_demo(tmp_path / "c", other)
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_labels_csv_matches_manifest_and_splits_are_stratified(wsi_demo, wsi_manifest):
    with (wsi_demo / "labels.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["slide_id", "label", "split"]
        rows = list(reader)
    assert len(rows) == len(wsi_manifest["slides"]) == 4
    labels = read_labels(wsi_demo / "labels.csv", wsi_demo / "slides")
    by_id = {e["slide_id"]: e for e in wsi_manifest["slides"]}
    for row in labels:
        entry = by_id[row.slide_id]
        assert row.label == {"normal": 0, "tumor": 1}[entry["label"]]
        assert row.split == entry["split"]
        assert row.path == wsi_demo / entry["file"] and row.path.is_file()
        assert bool(entry["tumor_regions"]) == bool(row.label)
    assert sorted(r.label for r in labels) == [0, 0, 1, 1]
    # a larger split assignment keeps both classes in every split
    from workflow.wsi.demo import _assign

    assigned = _assign(np.random.default_rng(0), DemoSettings(slides=24))
    for split in ("train", "val", "test"):
        assert {label for label, s in assigned if s == split} == {0, 1}
    assert sum(1 for _, s in assigned if s == "train") == 12


def test_manifest_is_written_last(wsi_demo):
    manifest_time = (wsi_demo / "manifest.json").stat().st_mtime_ns
    others = [p.stat().st_mtime_ns for p in wsi_demo.rglob("*") if p.name != "manifest.json"]
    assert all(t <= manifest_time for t in others)
    assert not [p for p in wsi_demo.rglob(".*")]  # no temporary files left


def test_tumor_texture_vanishes_at_x5_only():
    """Same slide with and without the planted texture: identical (up to rounding) after the
    8x block mean that makes x5, clearly different at x20 and x10."""
    settings = DemoSettings(slides=1, width=2048, height=2048, seed=3)
    with_t = render_slide(np.random.default_rng([3, 1]), settings, tumor=True)
    without = render_slide(np.random.default_rng([3, 1]), settings, tumor=True, plant=False)
    assert with_t.regions == without.regions and with_t.regions
    assert with_t.mimics == without.mimics
    a, b = pyramid(with_t.image, 4), pyramid(without.image, 4)
    for level, least in enumerate([8.0, 6.0, 3.0]):
        ds = 2**level
        h, w = a[level].shape[:2]
        yy, xx = (np.mgrid[0:h, 0:w] + 0.5) * ds
        inside = np.zeros((h, w), bool)
        near = np.zeros((h, w), bool)
        for cx, cy, r in with_t.regions + with_t.mimics:  # the same texture in both
            inside |= (xx - cx) ** 2 + (yy - cy) ** 2 <= (r - 8) ** 2
            near |= (xx - cx) ** 2 + (yy - cy) ** 2 <= (r + 8) ** 2
        diff = np.abs(a[level].astype(int) - b[level].astype(int))
        assert diff[inside].mean() >= least, (level, diff[inside].mean())
        assert diff[~near].max() == 0
    x5 = np.abs(a[3].astype(int) - b[3].astype(int))
    assert x5.max() <= 1 and x5.mean() < 0.05  # rounding only


def _fine_energy(rgb: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels of the grey image."""
    grey = rgb.astype(np.float32).mean(axis=-1)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_textured_lesions_differ_at_x20_not_at_x5_through_openslide(
    wsi_demo, wsi_manifest, tmp_path
):
    """Through the written JPEG slides: a 256 px square at the centre of every textured disc
    (metastasis or mimic) against the same square of the same slide written without the
    texture. x20 shows the dots; at x5 the two files hold the same pixels."""
    from tests.wsi.conftest import SMALL
    from workflow.wsi.demo import _assign, _slide_ids, write_slide

    ids = _slide_ids(_assign(np.random.default_rng([SMALL.seed, 0xC16]), SMALL))
    half = 128
    ratios: dict[int, list[float]] = {1: [], 3: []}
    colour_gap = []
    for entry in wsi_manifest["slides"]:
        discs = entry["tumor_regions"] + entry["mimic_regions"]
        i = ids.index(entry["slide_id"])
        plain = render_slide(
            np.random.default_rng([SMALL.seed, i]), SMALL, entry["label"] == "tumor", plant=False
        )
        plain_path = tmp_path / f"{entry['slide_id']}.tif"
        write_slide(
            plain_path,
            pyramid(plain.image, SMALL.levels),
            SMALL.mpp,
            SMALL.tile,
            SMALL.jpeg_quality,
        )
        with open_slide(wsi_demo / entry["file"]) as slide, open_slide(plain_path) as without:
            for disc in discs:
                corner = (disc["x"] - half, disc["y"] - half)
                for level in ratios:
                    side = 2 * half // int(slide.level_downsamples[level])
                    got = slide.read_rgb(corner, level, (side, side))
                    base = without.read_rgb(corner, level, (side, side))
                    ratios[level].append(_fine_energy(got) / _fine_energy(base))
                    if level == 3:
                        colour_gap.append(np.abs(got.mean((0, 1)) - base.mean((0, 1))).max())
    assert len(ratios[1]) >= 8  # 4 slides: 3-5 lesions each
    assert min(ratios[1]) > 3, ratios  # x20: the dots multiply the fine detail
    assert max(abs(np.log(ratios[3]))) < np.log(1.05), ratios  # x5: the same detail ...
    assert max(colour_gap) < 1, colour_gap  # ... and colour


def _coverage(disc: tuple[int, int, int], tile: int, size: int = 4096) -> np.ndarray:
    """Fraction of each ``tile`` x ``tile`` cell of a grid from (0, 0) inside the disc,
    sampled every 8 px."""
    cx, cy, r = disc
    grid = np.arange(0, size, 8) + 4
    xx, yy = np.meshgrid(grid, grid)
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    t = tile // 8
    return inside.reshape(size // tile, t, size // tile, t).mean(axis=(1, 3))


def test_lesions_are_as_stated_an_x20_tile_cannot_tell_a_metastasis_an_x10_tile_can():
    """The planted layout of 40 slides (drawn as render_slide draws it), measured with the
    demo's tiles (128 px: x20 256, x10 512 level-0 px): mimics fill whole x20 tiles as the
    metastasis does, but only the metastasis fills an x10 tile."""
    from workflow.wsi.demo import _assign
    from workflow.wsi.demo_render import _layout, _lesions

    s = DemoSettings(slides=40)
    assigned = _assign(np.random.default_rng([s.seed, 0xC16]), s)
    area: dict[int, list[float]] = {0: [], 1: []}
    mimic_x10, mimic_x20, metastasis_x10, gaps = [], [], [], []
    for i, (label, _) in enumerate(assigned):
        rng = np.random.default_rng([s.seed, i])
        layout = _layout(rng, s)
        metastases, mimics = _lesions(rng, layout["hard"], s, bool(label))
        assert len(metastases) == label
        assert (3 <= len(mimics) <= 5) if label == 0 else (0 <= len(mimics) <= 2)
        lesions = metastases + mimics
        for k, (x, y, r) in enumerate(lesions):
            assert layout["hard"][y // 16, x // 16]  # centred in tissue
            gaps += [np.hypot(x - x2, y - y2) - r - r2 for x2, y2, r2 in lesions[k + 1 :]]
        area[label].append(sum(np.pi * r * r for *_, r in lesions))
        for disc in mimics:
            assert 240 <= disc[2] <= 300
            mimic_x20.append(_coverage(disc, 256).max())
            mimic_x10.append(_coverage(disc, 512).max())
        for disc in metastases:
            assert disc[2] >= 500  # 560-680, a little less where an island is narrow
            metastasis_x10.append(_coverage(disc, 512).max())
    # lesions an x20 tile apart where the tissue has room, never overlapping
    assert min(gaps) >= 0 and np.mean(np.array(gaps) >= s.lesion_gap) > 0.9
    assert np.mean(np.array(mimic_x20) > 0.9) > 0.9  # nearly every mimic fills an x20 tile
    assert min(metastasis_x10) > 0.95  # every metastasis fills an x10 tile ...
    assert np.mean(mimic_x10) < 0.6 and np.mean(np.array(mimic_x10) > 0.95) == 0  # no mimic
    assert 1 < np.mean(area[1]) / np.mean(area[0]) < 2  # similar textured area per slide
