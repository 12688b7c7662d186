import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import INDEX_SETTINGS, ROOT
from workflow.common.errors import InputError
from workflow.distance.demo import DemoSettings, write_demo
from workflow.distance.index import assign_splits, build_index
from workflow.distance.joints import distance_from_keypoints
from workflow.distance.metrics import DISTANCE_BINS, OCCLUSION_BINS
from workflow.distance.motsynth import read_sequence


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
    ann = next(a for a in doc["annotations"] if min(a["keypoints_3d"][3::4]) == 2)
    assert len(ann["keypoints"]) == 22 * 3 and len(ann["keypoints_3d"]) == 22 * 4
    kp = np.array(ann["keypoints_3d"]).reshape(22, 4)
    # the pinhole model holds for a wholly visible person: projected feet rows = box bottom
    fy, cy = doc["info"]["fy"], doc["info"]["cy"]
    feet_v = fy * kp[[18, 21], 1] / kp[[18, 21], 2] + cy
    assert abs(feet_v.max() - (ann["bbox"][1] + ann["bbox"][3])) < 1.0


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


# --- The planted effects (workflow/distance/demo.py), measured from the JSON of the demo
# config's dataset with this file's own geometry, not the generator's.


def _knee_angle(kp: np.ndarray, hip: int, knee: int, ankle: int) -> float:
    u, v = kp[hip, :3] - kp[knee, :3], kp[ankle, :3] - kp[knee, :3]
    cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _inside(uv: np.ndarray, box: list[float], tol: float = 1.0) -> np.ndarray:
    x, y, w, h = box
    return (
        (uv[:, 0] >= x - tol)
        & (uv[:, 0] <= x + w + tol)
        & (uv[:, 1] >= y - tol)
        & (uv[:, 1] <= y + h + tol)
    )


def _object(ann: dict, frame: list[dict], info: dict, size: tuple[int, int]) -> dict:
    """What one annotation shows: pose and stature from keypoints_3d, frame cut and hidden
    joints from keypoints, and whether a nearer person's box covers the hidden ones."""
    width, height = size
    kp3 = np.array(ann["keypoints_3d"]).reshape(22, 4)
    uv = np.array(ann["keypoints"]).reshape(22, 3)[:, :2]
    flags = kp3[:, 3]
    feet = kp3[[18, 21], :3].mean(axis=0)
    distance = float(np.linalg.norm(feet))
    in_frame = (uv[:, 0] >= 0) & (uv[:, 0] <= width) & (uv[:, 1] >= 0) & (uv[:, 1] <= height)
    hidden = (flags == 1) & in_frame
    behind_person = np.zeros(22, bool)
    crowd = False
    for other in frame:
        if other is ann:
            continue
        other_feet = np.array(other["keypoints_3d"]).reshape(22, 4)[[18, 21], :3].mean(axis=0)
        crowd |= bool(np.linalg.norm(other_feet - feet) < 1.5)
        if np.linalg.norm(other_feet) < distance:
            behind_person |= _inside(uv, other["bbox"])
    knee = (_knee_angle(kp3, 16, 17, 18) + _knee_angle(kp3, 19, 20, 21)) / 2
    upright = knee > 150  # straight legs; sitting ~90 degrees, crouching ~45
    stature = np.linalg.norm(kp3[0, :3] - feet) / 0.96  # standing: ankles at 4% of stature
    x, y, w, h = ann["bbox"]
    return {
        "distance": distance,
        "visibility": float((flags == 2).mean()),
        "w": w,
        "h": h,
        "fy": info["fy"],
        "upright": upright,
        "child": upright and stature < 1.46,
        "seated": not upright,
        "cut": bool((~in_frame).any()),
        "touches_border": x <= 0.5 or y <= 0.5 or x + w >= width - 0.5 or y + h >= height - 0.5,
        "by_person": bool((hidden & behind_person).any()),
        "by_occluder": bool((hidden & ~behind_person).any()),
        "crowd": crowd,
        "seen_in_box": bool(_inside(uv[flags == 2], ann["bbox"]).all()),
        "keypoint_h": float(np.ptp(uv[in_frame, 1])) if in_frame.any() else 0.0,
        "whole_adult": upright and stature >= 1.46 and bool((flags == 2).all()),
    }


def objects_of(root) -> pd.DataFrame:
    rows = []
    for path in sorted((root / "annotations").glob("*.json")):
        doc = json.loads(path.read_text())
        size = (doc["images"][0]["width"], doc["images"][0]["height"])
        frames: dict[int, list[dict]] = {}
        for ann in doc["annotations"]:
            frames.setdefault(ann["image_id"], []).append(ann)
        for frame in frames.values():
            rows += [_object(ann, frame, doc["info"], size) for ann in frame]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def config_demo(tmp_path_factory):
    """The demo config's dataset (config/config.yaml distance.demo), indexed with its settings."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["distance"]
    settings = DemoSettings(**config["demo"])
    root = tmp_path_factory.mktemp("config_demo")
    write_demo(root, settings)
    index = {"split_seed": 0, "split_sequences": None, **config["index"]}
    out = {s: root / f"{s}.parquet" for s in ("train", "val", "test")}
    build_index(root, out, root / "skipped.tsv", index, "fail")
    return {"root": root, "index": index, "tables": {s: pd.read_parquet(p) for s, p in out.items()}}


@pytest.fixture(scope="module")
def demo_objects(config_demo):
    return objects_of(config_demo["root"])


def test_demo_plants_effects_in_stated_proportions(demo_objects):
    """The proportions of annotations that demo.py's docstring states for the demo config."""
    share = demo_objects.mean(numeric_only=True)
    assert 0.06 <= share["child"] <= 0.16, share
    assert 0.10 <= share["seated"] <= 0.22, share
    assert 0.05 <= share["cut"] <= 0.14, share
    assert 0.08 <= share["by_occluder"] <= 0.25, share
    assert 0.08 <= share["by_person"] <= 0.25, share
    assert 0.25 <= share["crowd"] <= 0.55, share
    # seated and crouching people: shorter and relatively wider boxes than upright ones
    aspect = demo_objects["w"] / demo_objects["h"]
    assert aspect[demo_objects["seated"]].median() > 1.2 * aspect[demo_objects["upright"]].median()
    # children: statures of upright people reach 1.0 m
    assert demo_objects["child"].sum() >= 50


def test_boxes_are_the_visible_part(demo_objects):
    """Modal boxes, as a detector gives: clipped to the frame, every visible joint inside,
    and shorter than the joints' extent where the lower body is hidden."""
    assert demo_objects["seen_in_box"].all()
    cut = demo_objects[demo_objects["cut"]]
    assert cut["touches_border"].mean() > 0.95
    hidden = demo_objects[demo_objects["by_occluder"] & ~demo_objects["cut"]]
    assert (hidden["h"] < 0.9 * hidden["keypoint_h"]).mean() > 0.5


def test_pinhole_errs_where_the_box_is_not_the_person(demo_objects):
    rel = (demo_objects["fy"] * 1.75 / demo_objects["h"] - demo_objects["distance"]).abs()
    rel /= demo_objects["distance"]
    assert rel[demo_objects["whole_adult"]].mean() < 0.1
    for effect in ("child", "seated", "by_occluder"):
        assert rel[demo_objects[effect]].mean() > 0.25, effect


def test_visibility_filter_drops_objects(config_demo, demo_objects):
    low = demo_objects["visibility"] < config_demo["index"]["min_visibility"]
    assert 0.01 <= low.mean() <= 0.08
    root = config_demo["root"]
    read = sum(len(read_sequence(p, root, "feet", "fail")[1]) for p in root.glob("annotations/*"))
    kept = sum(len(t) for t in config_demo["tables"].values())
    assert read == len(demo_objects) and kept == read - low.sum()


def test_every_metric_bin_has_test_objects(config_demo):
    test = config_demo["tables"]["test"]
    for lo, hi in DISTANCE_BINS:
        assert test["distance"].between(lo, hi, inclusive="left").sum() > 0, (lo, hi)
    for lo, hi in OCCLUSION_BINS:
        assert test["occlusion"].between(lo, hi, inclusive="both" if hi == 1 else "left").sum() > 0
