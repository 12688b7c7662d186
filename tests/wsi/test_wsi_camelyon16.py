"""Camelyon16 as distributed: the importer (folders + reference.csv -> labels CSV), its lesion
XMLs (ASAP) -> tumour masks and tile labels, and lesion-level evaluation of attention maps."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_script
from workflow.common.errors import InputError
from workflow.wsi.camelyon16 import camelyon16_labels, read_reference
from workflow.wsi.froc import lesion_files_of, lesion_metrics
from workflow.wsi.labels import read_labels
from workflow.wsi.lesions import (
    MAX_XML_BYTES,
    find_annotation,
    lesions_dataset,
    parse_asap,
    read_asap,
    tumor_mask,
)
from workflow.wsi.tiling import TileScale, Tiling, write_tiling

# test_001 tumour (macro), test_002 normal, ... as the challenge's reference.csv writes them
REFERENCE = ["test_001,Tumor,Macro,", "test_002,Normal,,", "test_003,Tumor,Micro,",
             "test_004,Normal,,", "test_005,Normal,,", "test_006,Tumor,Macro,"]  # fmt: skip


def camelyon16_root(root: Path, normal: int = 10, tumor: int = 8) -> Path:
    """The official layout; only the names matter to the importer (empty .tif files)."""
    for folder, prefix, n in (("training/normal", "normal", normal),
                              ("training/tumor", "tumor", tumor)):  # fmt: skip
        (root / folder).mkdir(parents=True)
        for k in range(1, n + 1):
            (root / folder / f"{prefix}_{k:03d}.tif").touch()
    (root / "testing/images").mkdir(parents=True)
    for k in range(1, len(REFERENCE) + 1):
        (root / "testing/images" / f"test_{k:03d}.tif").touch()
    (root / "testing/reference.csv").write_text("\n".join(REFERENCE) + "\n")
    return root


def asap(*polygons: tuple[str, list[tuple[float, float]]]) -> str:
    """ASAP XML as the challenge distributes it, written here from the published format."""
    body = []
    for k, (group, points) in enumerate(polygons):
        coords = "".join(
            f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(points)
        )
        body.append(
            f'<Annotation Name="_{k}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">'
            f"<Coordinates>{coords}</Coordinates></Annotation>"
        )
    return (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>' + "".join(body) + "</Annotations>"
        '<AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#ff0000"><Attributes />'
        "</Group></AnnotationGroups></ASAP_Annotations>"
    )


def square(x0: float, y0: float, side: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]


def test_the_official_layout_becomes_a_labels_csv(tmp_path):
    root = camelyon16_root(tmp_path / "CAMELYON16")
    rows = pd.DataFrame(camelyon16_labels(root, val_fraction=0.25, seed=1))
    assert len(rows) == 10 + 8 + 6 and rows["slide_id"].is_unique
    test = rows[rows["split"] == "test"].set_index("slide_id")
    assert test["label"].to_dict() == {
        "test_001": "tumor", "test_002": "normal", "test_003": "tumor",
        "test_004": "normal", "test_005": "normal", "test_006": "tumor",
    }  # fmt: skip
    assert test.loc["test_003", "path"] == "testing/images/test_003.tif"
    # a stratified validation draw from training: round(0.25 * 10) = 2 normal (rounds to
    # even), round(0.25 * 8) = 2 tumour
    val = rows[rows["split"] == "val"]
    assert sorted(val["label"].tolist()) == ["normal"] * 2 + ["tumor"] * 2
    assert all(s.startswith(c) for s, c in zip(val["slide_id"], val["label"], strict=True))
    assert (rows["split"] == "train").sum() == 18 - 4
    again = pd.DataFrame(camelyon16_labels(root, val_fraction=0.25, seed=1))
    assert again.equals(rows)
    other = [pd.DataFrame(camelyon16_labels(root, 0.25, s)) for s in range(2, 6)]
    assert any(set(o[o["split"] == "val"]["slide_id"]) != set(val["slide_id"]) for o in other)
    # the default: a tenth of each class, at least one
    default = pd.DataFrame(camelyon16_labels(root))
    assert (default["split"] == "val").sum() == 2
    # the CSV the track reads: read_labels finds every slide through the path column
    csv = tmp_path / "labels.csv"
    rows.to_csv(csv, index=False)
    labels = read_labels(csv, root)
    assert sum(s.label for s in labels) == 8 + 3 and labels[0].path.is_file()


@pytest.mark.parametrize(
    "damage, where, problem",
    [
        (lambda r: (r / "training/tumor").rename(r / "tumours"), "training/tumor", "not found"),
        (lambda r: (r / "testing/reference.csv").unlink(), "reference.csv", "not found"),
        (lambda r: (r / "testing/images/test_006.tif").unlink(), "reference.csv",
         "naming no slide in .*: test_006"),
        (lambda r: (r / "testing/images/test_007.tif").touch(), "reference.csv",
         "no row: test_007"),
        (lambda r: (r / "testing/reference.csv").write_text("test_001,Maybe,,\n"),
         "reference.csv", "line 1: label 'Maybe' is neither"),
        (lambda r: (r / "testing/reference.csv").write_text("\n".join(REFERENCE + ["x"])),
         "reference.csv", "line 7: expected"),
        (lambda r: (r / "testing/reference.csv").write_text("\n".join(REFERENCE * 2)),
         "reference.csv", "line 7: test_001 listed again"),
    ],
)  # fmt: skip
def test_what_stops_the_importer(tmp_path, damage, where, problem):
    root = camelyon16_root(tmp_path / "c16")
    damage(root)
    with pytest.raises(InputError, match=problem) as err:
        camelyon16_labels(root)
    assert err.value.path.endswith(where)


def test_reference_rows_and_the_stage_from_the_command_line(tmp_path):
    path = tmp_path / "reference.csv"
    path.write_text("image,label,type,comment\ntest_001.tif,TUMOR,Macro,\n\ntest_002,normal,,\n")
    assert read_reference(path) == {"test_001": 1, "test_002": 0}
    root = camelyon16_root(tmp_path / "c16")
    labels = tmp_path / "out/labels.csv"
    run_script("scripts/wsi.py", "camelyon16", "--root", root, "--labels", labels,
               "--settings", '{"val": 0.2}')  # fmt: skip
    assert (pd.read_csv(labels)["split"] == "val").sum() == 2 + 2
    (root / "testing/images/test_002.tif").unlink()
    failed = run_script("scripts/wsi.py", "camelyon16", "--root", root, "--labels", labels,
                        check=False)  # fmt: skip
    assert failed.returncode == 2
    assert f"error: {root / 'testing/reference.csv'}: row(s) naming no slide" in failed.stderr


def test_asap_polygons_make_a_tumour_mask_minus_exclusions(tmp_path):
    # a 640 px tumour square with a 256 px exclusion inside, a second tumour square in the
    # `Tumor` group; at 32 level-0 px per pixel a pixel is in when its centre is
    xml = asap(("_0", square(0, 0, 640)), ("_2", square(192, 192, 256)),
               ("Tumor", square(1024, 0, 320)))  # fmt: skip
    (tmp_path / "a.xml").write_text(xml)
    found = read_asap(tmp_path / "a.xml")
    assert len(found.tumor) == 2 and len(found.excluded) == 1
    mask = tumor_mask(found, (2000, 1000))
    assert mask.shape == (32, 63)  # ceil(1000 / 32), ceil(2000 / 32)
    assert mask[:20, :20].sum() == 20 * 20 - 8 * 8  # pixels 0-19 minus 6-13
    assert not mask[6:14, 6:14].any() and mask[5, 5] and mask[14, 14]
    assert mask[:10, 32:42].all() and mask.sum() == 336 + 100
    for bad, problem in [
        ("not xml", "not an XML file"),
        ("<Other/>", "not an ASAP annotation file"),
        (asap(("Stroma", square(0, 0, 9))), "group 'Stroma' is neither tumour"),
        (asap(("_0", [(0, 0), (5, 5)])), "2 vertices"),
    ]:
        with pytest.raises(InputError, match=problem):
            parse_asap(bad, "x.xml")


def test_hostile_annotation_files_are_refused_by_name(tmp_path):
    """An entity bomb, a coordinate that is no finite number, and a zip member that would
    unpack past any real annotation file (read no further than its header)."""
    entities = "".join(f'<!ENTITY e{i + 1} "{f"&e{i};" * 10}">' for i in range(8))
    doctype = f'<!DOCTYPE x [<!ENTITY e0 "aaaaaaaaaa">{entities}]>'
    bomb = f"{doctype}<ASAP_Annotations>&e8;</ASAP_Annotations>"  # 10^9 characters
    with pytest.raises(InputError, match="not an XML file: limit on input amplification"):
        parse_asap(bomb, "bomb.xml")
    for value in ("nan", "inf", "-inf"):
        with pytest.raises(InputError, match=f"'{value}' is not a finite number"):
            parse_asap(asap(("_0", [(0, 0), (5, 5), (9, value)])), "x.xml")
    folder = tmp_path / "lesion_annotations"
    with zipfile.ZipFile(folder.with_name(folder.name + ".zip"), "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lesion_annotations/tumor_001.xml", b" " * (MAX_XML_BYTES + 1))
    with pytest.raises(InputError, match=rf"{MAX_XML_BYTES + 1} bytes, more than") as err:
        find_annotation([folder], "tumor_001")
    assert err.value.path.endswith("lesion_annotations.zip:lesion_annotations/tumor_001.xml")


def tiling_of(path: Path, slide_id: str, size: int = 4096, mpp: float = 0.25) -> None:
    """A two-scale tiling file (x10: 512 px footprints, x20: 256) covering the whole slide."""
    scales = []
    for name, mag, footprint in (("x10", 10.0, 512), ("x20", 20.0, 256)):
        grid = np.arange(0, size, footprint)
        coords = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
        parent, tissue = np.zeros(len(coords), np.int64), np.ones(len(coords), np.float32)
        scales.append(
            TileScale(name, mag, 0, footprint / 128, 128, 128, footprint, coords, parent, tissue)
        )
    attrs = {"slide_id": slide_id, "slide_path": "none", "mpp": mpp, "scales": ["x10", "x20"],
             "dimensions": [size, size]}  # fmt: skip
    write_tiling(Tiling(slide_id, "none", mpp, scales, attrs), path)


def test_lesions_stage_and_the_evaluation_of_attention(tmp_path):
    # tumor_001: a 1024 px (256 um) lesion at (1024, 1024) and a 64 px (16 um) ITC far away;
    # tumor_002 has no annotation file; normal_001 none, as it should. The XMLs come zipped.
    archive = tmp_path / "lesion_annotations.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        xml = asap(("_0", square(1024, 1024, 1024)), ("_1", square(3584, 256, 64)))
        zf.writestr("lesion_annotations/tumor_001.xml", xml)
    rows = []
    for slide_id, label in (("tumor_001", 1), ("tumor_002", 1), ("normal_001", 0)):
        tiling_of(tmp_path / f"{slide_id}.tiles.h5", slide_id)
        rows.append({"slide_id": slide_id, "label": label, "split": "test",
                     "tiles": str(tmp_path / f"{slide_id}.tiles.h5")})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "tiles.tsv", sep="\t", index=False)
    index = tmp_path / "lesions/index.tsv"
    folders, skipped = [tmp_path / "lesion_annotations"], tmp_path / "lesions/skipped.tsv"
    lesions_dataset(
        tmp_path / "tiles.tsv", folders, index, skipped, {"tile_tumor_fraction": 0.5}, "fail"
    )
    table = pd.read_csv(index, sep="\t").set_index("slide_id")
    assert table.loc["tumor_001", ["annotated", "n_lesions", "n_itc"]].tolist() == [1, 1, 1]
    assert table.loc["tumor_002", "annotated"] == 0 and table.loc["normal_001", "annotated"] == 1
    assert table.loc["tumor_001", "tumor_tiles"] == 16  # 1024 / 256 squared x20 tiles
    with h5py.File(table.loc["tumor_001", "lesions"]) as h5:
        x10 = h5["x10/tumor_fraction"][()].reshape(8, 8)
        assert x10[2:4, 2:4].tolist() == [[1, 1], [1, 1]] and x10.sum() == pytest.approx(4 + 1 / 64)
        assert list(h5.attrs["itc"]) == [h5["evaluation"][8, 112]] != [0]  # the small one

    # attention: on tumor_001 the x20 tiles of the lesion score 2, one stray tile 3 (a false
    # positive); normal_001 peaks at 1 somewhere; tumor_002 is left out (no annotation)
    attention = tmp_path / "attention.h5"
    with h5py.File(attention, "w") as h5:
        for slide_id in ("tumor_001", "tumor_002", "normal_001"):
            grid = np.arange(0, 4096, 256)
            coords = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
            scores = np.full(len(coords), 0.0)
            if slide_id == "tumor_001":
                inside = (coords >= 1024).all(1) & (coords < 2048).all(1)
                scores[inside] = 2.0
                scores[(coords == [0, 3840]).all(1)] = 3.0
            else:
                scores[5] = 1.0
            h5[f"{slide_id}/coords"], h5[f"{slide_id}/scores"] = coords, scores
            h5[slide_id].attrs["footprint"] = 256
    probs = {"tumor_001": 0.9, "tumor_002": 0.8, "normal_001": 0.3}
    metrics, details = lesion_metrics(attention, probs, lesion_files_of(index))
    # detections: tumor_001's lesion plateau (score 0.9 * 2/3 = 0.6) and the stray tile
    # (0.9); normal_001's peak (0.3). Thresholds: 0.9 -> 1 FP / 2 slides, lesion missed;
    # 0.6 -> 0.5, found; 0.3 -> 1.0, found. FROC: at 0.25 half of 1 (interpolated from
    # (0, 0)), 1 from 0.5 on.
    assert metrics["FROC"] == pytest.approx((0.5 + 5) / 6)
    assert details["lesion_slides"] == 2 and details["lesions_left_out"] == ["tumor_002"]
    # tiles of tumor_001: the 16 lesion tiles at 2/3, the stray one (not tumour) at 1
    assert metrics["tile_AUC"] == pytest.approx(1 - 1 / (256 - 16))


def test_the_demo_annotates_its_metastases(wsi_demo, wsi_manifest):
    for entry in wsi_manifest["slides"]:
        path = wsi_demo / "lesions" / f"{entry['slide_id']}.xml"
        assert path.is_file() == bool(entry["tumor_regions"]) == (entry["label"] == "tumor")
        if path.is_file():
            (disc,) = entry["tumor_regions"]
            found = read_asap(path)
            mask = tumor_mask(found, (entry["width"], entry["height"]), downsample=8)
            area = mask.sum() * 64
            assert area == pytest.approx(np.pi * disc["radius"] ** 2, rel=0.03)
