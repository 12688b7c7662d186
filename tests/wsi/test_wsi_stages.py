"""The preparation stages as the rules run them: bad slides follow on_bad_sample, bad slide
lists stop the stage, feature files resume per slide."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_script
from tests.wsi.conftest import write_plain_slide

SEGMENT = {"target_mpp": 8.0}


@pytest.fixture
def dataset(wsi_demo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(wsi_demo, tmp_path / "camelyon16"))


def segment(root: Path, out: Path, policy: str, labels: Path | None = None):
    return run_script(
        "scripts/wsi.py",
        "segment",
        "--slides",
        root / "slides",
        "--labels",
        labels or root / "labels.csv",
        "--index",
        out / "index.tsv",
        "--skipped",
        out / "skipped.tsv",
        "--settings",
        json.dumps(SEGMENT),
        "--on-bad-sample",
        policy,
        check=False,
    )


def first_slide(root: Path) -> Path:
    return sorted((root / "slides").glob("*.tif"))[0]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def not_a_slide(path: Path) -> None:
    path.write_text("slide_id,label\nnot,a slide\n")


def without_mpp(path: Path) -> None:
    write_plain_slide(path, np.full((2048, 2048, 3), 200, np.uint8), mpp=None)


def blank(path: Path) -> None:
    write_plain_slide(path, np.full((2048, 2048, 3), 244, np.uint8))


DAMAGE = {
    "truncated TIFF": (truncate, "truncated"),
    "not a slide": (not_a_slide, "not a whole-slide image"),
    "no resolution": (without_mpp, "no resolution"),
    "no tissue": (blank, "no tissue"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_slide_fails_cleanly_or_is_skipped_and_counted(dataset, tmp_path, case):
    damage, fragment = DAMAGE[case]
    slide = first_slide(dataset)
    damage(slide)
    out = tmp_path / "fail"
    result = segment(dataset, out, "fail")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {slide}: ") and fragment in last, last
    assert "Traceback" not in result.stderr
    assert not (out / "index.tsv").exists()

    out = tmp_path / "skip"
    result = segment(dataset, out, "skip")
    assert result.returncode == 0, result.stderr
    index = pd.read_csv(out / "index.tsv", sep="\t")
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t")
    labels = pd.read_csv(dataset / "labels.csv")
    assert len(index) == len(labels) - 1 and slide.stem not in set(index["slide_id"])
    assert skipped["item"].tolist() == [slide.stem] and fragment in skipped["problem"][0]
    assert f"{len(index)} slides -> " in result.stderr and "1 skipped" in result.stderr


def test_a_failed_stage_leaves_no_per_slide_file(dataset, tmp_path):
    """The last slide is damaged: under ``fail`` the PNGs of the slides before it go too;
    with every slide damaged, ``skip`` names the reasons (no skipped.tsv is left to read)."""
    slides = sorted((dataset / "slides").glob("*.tif"))
    truncate(slides[-1])
    labels = pd.read_csv(dataset / "labels.csv", dtype=str)
    order = labels.set_index("slide_id").loc[[p.stem for p in slides]].reset_index()
    order.to_csv(dataset / "labels.csv", index=False)  # the damaged slide comes last
    result = segment(dataset, tmp_path / "fail", "fail")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert list((tmp_path / "fail").iterdir()) == []

    order.iloc[-1:].to_csv(dataset / "last.csv", index=False)
    result = segment(dataset, tmp_path / "skip", "skip", labels=dataset / "last.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"no slide left (1 skipped: {slides[-1].stem}: " in last and "see" not in last, last
    assert not (tmp_path / "skip").exists() or list((tmp_path / "skip").iterdir()) == []


def test_labels_naming_a_missing_slide_stop_the_stage(dataset, tmp_path):
    slide = first_slide(dataset)
    slide.unlink()
    result = segment(dataset, tmp_path / "out", "skip")  # a wrong slide list is never skipped
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {slide}: ") and "not found" in last, last


def test_duplicate_slide_ids_stop_the_stage(dataset, tmp_path):
    labels = dataset / "labels.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([*lines, lines[1]]) + "\n")
    result = segment(dataset, tmp_path / "out", "skip")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {labels}: duplicate slide_id"), last


TILING = {"magnifications": [5, 10, 20], "patch_size": 256, "keep_ancestors": True}
FEATURES = {"encoder": "mobilenetv3_small_050", "weights": None, "batch_size": 32, "seed": 0}


def segmented(dataset: Path, prep: Path) -> Path:
    """The segment stage's index of ``dataset``, written under ``prep/s``."""
    from workflow.wsi.prepare import segment_dataset

    index = prep / "s/index.tsv"
    segment_dataset(dataset / "slides", dataset / "labels.csv", index, prep / "s/x.tsv",
                    SEGMENT, "fail")  # fmt: skip
    return index


def tiled(segments: Path, prep: Path, min_tissue: float, policy: str = "fail") -> Path:
    """The tile stage's index (under ``prep/t``) at ``min_tissue``."""
    from workflow.wsi.prepare import tile_dataset

    index = prep / "t/index.tsv"
    tile_dataset(segments, index, prep / "t/x.tsv", {**TILING, "min_tissue": min_tissue}, policy)
    return index


def featurized(tiles: Path, prep: Path, settings: dict = FEATURES) -> list[Path]:
    """The features stage (under ``prep/f``): the per-slide files there."""
    from workflow.wsi.prepare import features_dataset

    features_dataset(tiles, prep / "f/index.tsv", prep / "f/x.tsv", settings, "fail")
    return sorted((prep / "f").glob("*.h5"))


def test_features_resume_per_slide_and_redo_on_new_settings(dataset, tmp_path, caplog):
    prep = tmp_path / "prep"
    tiles = tiled(segmented(dataset, prep), prep, 0.25)
    files = featurized(tiles, prep)
    assert len(files) == len(pd.read_csv(prep / "f/index.tsv", sep="\t"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()  # as if the job had been killed before this slide

    with caplog.at_level("INFO", logger="lsai.wsi.prepare"):
        featurized(tiles, prep)
    assert files[0].exists()
    assert all(f.stat().st_mtime_ns == stamps[f] for f in files[1:])
    assert caplog.text.count("already computed") == len(files) - 1

    featurized(tiles, prep, {**FEATURES, "seed": 1})
    assert all(f.stat().st_mtime_ns != stamps[f] for f in files[1:])


def test_features_are_recomputed_when_the_tiling_changes(dataset, tmp_path, caplog):
    """Same feature settings, stricter tiling: no slide keeps its stale feature vectors."""
    from workflow.wsi.graph import read_feature_file

    def counts(path: Path) -> dict[str, int]:
        return {scale.name: len(scale.features) for scale in read_feature_file(path)[0]}

    prep = tmp_path / "prep"
    segments = segmented(dataset, prep)
    tiles = tiled(segments, prep, 0.1)
    before = {f: counts(f) for f in featurized(tiles, prep)}

    tiled(segments, prep, 0.9, "skip")
    kept = pd.read_csv(tiles, sep="\t", dtype={"slide_id": str})
    with caplog.at_level("INFO", logger="lsai.wsi.prepare"):
        featurized(tiles, prep)
    assert "already computed" not in caplog.text
    changed = 0
    for row in kept.itertuples():
        path = prep / "f" / f"{row.slide_id}.h5"
        now = counts(path)
        assert now["x20"] == row.n_x20, row.slide_id  # the features of the tiles now there
        changed += now != before[path]
    assert changed > 0  # the stricter tiling did drop tiles


def test_every_stage_has_help():
    result = run_script("scripts/wsi.py", "--help")
    stages = ("demo", "segment", "tile", "features")
    assert all(s in result.stdout for s in stages), result.stdout


def test_heatmaps_name_a_missing_thumbnail_slide_or_attention_file(tmp_path):
    """The figures stage's inputs: a damaged one is an ``error: <path>: ...``, not a
    traceback."""
    import h5py
    from PIL import Image

    from workflow.common.errors import InputError
    from workflow.wsi.plots import attention_heatmaps

    attention, thumb, out = tmp_path / "attention.h5", tmp_path / "s0.thumb.png", tmp_path / "out"
    with h5py.File(attention, "w") as h5:
        group = h5.create_group("s0")
        group["coords"] = np.zeros((1, 2), dtype=np.int64)
        group["scores"] = np.ones(1, dtype=np.float32)
        group.attrs.update(footprint=256, magnification=20.0, label=1)
    segments = pd.DataFrame({"thumbnail": [str(thumb)], "mask_downsample": [64.0]},
                            index=pd.Index(["s0"], name="slide_id"))  # fmt: skip
    with pytest.raises(InputError, match="image not found") as missing:
        attention_heatmaps(attention, segments, out, "m")
    assert missing.value.path == str(thumb)
    Image.new("RGB", (8, 8)).save(thumb)
    assert attention_heatmaps(attention, segments, out, "m") == 1
    assert (out / "s0.png").stat().st_size > 0
    with pytest.raises(InputError, match="s0 has no thumbnail"):
        attention_heatmaps(attention, segments.rename(index={"s0": "s1"}), out, "m")
    attention.write_bytes(b"not an HDF5 file")
    with pytest.raises(InputError, match="not a readable attention file") as damaged:
        attention_heatmaps(attention, None, out, "m")
    assert damaged.value.path == str(attention)
