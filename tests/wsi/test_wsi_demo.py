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

from workflow.wsi.demo import (
    DemoSettings,
    pyramid,
    render_slide,
    write_demo,
)
from workflow.wsi.labels import read_labels
from workflow.wsi.segment import saturation
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
    a, b = pyramid(with_t.image, 4), pyramid(without.image, 4)
    for level, least in enumerate([8.0, 6.0, 3.0]):
        ds = 2**level
        h, w = a[level].shape[:2]
        yy, xx = (np.mgrid[0:h, 0:w] + 0.5) * ds
        inside = np.zeros((h, w), bool)
        near = np.zeros((h, w), bool)
        for cx, cy, r in with_t.regions:
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


def test_tumor_regions_differ_at_x20_not_at_x5_through_openslide(wsi_demo, wsi_manifest):
    """Through the written JPEG slide: inside each tumour disc vs tissue next to it."""
    tumours = [e for e in wsi_manifest["slides"] if e["tumor_regions"]]
    assert tumours
    ratios = {1: [], 3: []}
    colour_gap = []
    for entry in tumours:
        with open_slide(wsi_demo / entry["file"]) as slide:
            for region in entry["tumor_regions"]:
                cx, cy, r = region["x"], region["y"], region["radius"]
                half = int(r / 1.6)  # a square inside the disc
                for level in ratios:
                    ds = int(slide.level_downsamples[level])
                    side = 2 * half // ds
                    inner = slide.read_rgb((cx - half, cy - half), level, (side, side))
                    # same-sized square of tissue beside the disc, on the side with most tissue
                    best = None
                    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        ox, oy = cx + dx * (r + half + 64) - half, cy + dy * (r + half + 64) - half
                        outer = slide.read_rgb((ox, oy), level, (side, side))
                        tissue = (saturation(outer) > 0.15).mean()
                        if best is None or tissue > best[0]:
                            best = (tissue, outer)
                    if best[0] < 0.95:
                        continue
                    ratios[level].append(_fine_energy(inner) / _fine_energy(best[1]))
                    if level == 3:
                        colour_gap.append(np.abs(inner.mean((0, 1)) - best[1].mean((0, 1))).max())
    assert len(ratios[1]) >= 2 and len(ratios[3]) >= 2
    # x20: the dots stand out; x5: no more than tissue-to-tissue variation, same colour
    assert min(ratios[1]) > 3, ratios
    assert max(abs(np.log(ratios[3]))) < np.log(1.4), ratios
    assert max(colour_gap) < 12, colour_gap
