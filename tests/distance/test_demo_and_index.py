import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import INDEX_SETTINGS
from workflow.common.errors import InputError
from workflow.distance.demo import DemoSettings, write_demo
from workflow.distance.index import assign_splits, build_index
from workflow.distance.joints import distance_from_keypoints


def digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic(tmp_path):
    settings = DemoSettings(sequences=3, frames_per_sequence=2, seed=7)
    write_demo(tmp_path / "a", settings)
    write_demo(tmp_path / "b", settings)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    write_demo(tmp_path / "c", DemoSettings(sequences=3, frames_per_sequence=2, seed=8))
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_demo_has_motsynth_layout(demo_root):
    doc = json.loads((demo_root / "annotations" / "000.json").read_text())
    assert {"fx", "fy", "cx", "cy", "cam_fov", "seq_name"} <= set(doc["info"])
    image = doc["images"][0]
    assert image["file_name"] == "frames/000/rgb/0000.jpg"
    with Image.open(demo_root / image["file_name"]) as jpg:
        assert jpg.format == "JPEG" and jpg.size == (image["width"], image["height"])
    ann = doc["annotations"][0]
    assert len(ann["keypoints"]) == 22 * 3 and len(ann["keypoints_3d"]) == 22 * 4
    kp = np.array(ann["keypoints_3d"]).reshape(22, 4)
    # the pinhole model holds: projected feet rows match the box bottom
    fy, cy = doc["info"]["fy"], doc["info"]["cy"]
    feet_v = fy * kp[[18, 21], 1] / kp[[18, 21], 2] + cy
    assert abs(feet_v.max() - (ann["bbox"][1] + ann["bbox"][3])) < 1.0


def test_planted_signal_pinhole_is_close(prepared):
    table = pd.read_parquet(prepared["test_index"])
    pinhole = table["fy"] * 1.75 / table["h"]
    rel = ((pinhole - table["distance"]).abs() / table["distance"]).mean()
    assert rel < 0.1
    assert table["distance"].between(3, 80).all()


def test_distance_definitions():
    kp = np.zeros((22, 4))
    kp[:, 2] = 10.0
    kp[18, :3] = [3.0, 0.0, 4.0]
    kp[21, :3] = [3.0, 0.0, 4.0]
    kp[0, :3] = [0.0, -1.0, 10.0]  # MOTSynth's joint 0: the head
    kp[1, :3] = [0.0, -0.9, 10.0]  # the JTA skeleton's head centre, just below: not used
    assert distance_from_keypoints(kp, "feet") == pytest.approx(5.0)
    assert distance_from_keypoints(kp, "depth") == pytest.approx(4.0)
    assert distance_from_keypoints(kp, "head") == pytest.approx(np.sqrt(101))


def test_splits_are_by_sequence_and_seeded():
    seqs = [f"{i:03d}" for i in range(10)]
    a = assign_splits(seqs, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    assert a == assign_splits(seqs, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    assert sorted(a.values()).count("test") == 2 and sorted(a.values()).count("val") == 2
    explicit = assign_splits(seqs, {}, 0, {"train": ["000"], "val": ["001"], "test": ["002"]})
    assert explicit == {"000": "train", "001": "val", "002": "test"}
    with pytest.raises(InputError, match="not in the data"):
        assign_splits(seqs, {}, 0, {"train": ["999"], "val": [], "test": []})


def test_index_filters_and_strides(demo_root, tmp_path):
    settings = {
        **INDEX_SETTINGS,
        "min_visibility": 0.9,
        "frame_stride": {"train": 2, "val": 1, "test": 3},
    }
    out = {s: tmp_path / f"{s}.parquet" for s in ("train", "val", "test")}
    build_index(demo_root, out, tmp_path / "skipped.tsv", settings, "fail")
    train, test = pd.read_parquet(out["train"]), pd.read_parquet(out["test"])
    assert (train["frame"] % 2 == 0).all() and (test["frame"] % 3 == 0).all()
    assert (train["visibility"] >= 0.9).all()
    assert set(train["sequence"]).isdisjoint(test["sequence"])
    assert (tmp_path / "skipped.tsv").read_text() == "path\titem\tproblem\n"
