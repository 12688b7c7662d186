"""Damaged inputs: a clear `error: <path>: <problem>` (or a counted skip), never a traceback,
and no half-written output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import INDEX_SETTINGS, run_script

SPLITS = ("train", "val", "test")


@pytest.fixture
def data(demo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "motsynth"
    shutil.copytree(demo_root, root)
    return root


def index(root: Path, out: Path, policy: str):
    args = [
        "scripts/distance.py",
        "index",
        "--root",
        root,
        "--skipped",
        out / "skipped.tsv",
        "--settings",
        json.dumps(INDEX_SETTINGS),
        "--on-bad-sample",
        policy,
    ]
    for split in SPLITS:
        args += [f"--{split}", out / f"{split}.parquet"]
    return run_script(*args, check=False)


def edit_annotation(root: Path, change) -> Path:
    path = root / "annotations" / "001.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


def assert_clean_failure(result, out: Path, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for fragment in fragments:
        assert fragment in last, last
    assert "Traceback" not in result.stderr
    leftovers = [p.name for p in out.iterdir()] if out.exists() else []
    assert leftovers == [], f"half-written outputs left: {leftovers}"


def test_malformed_json_stops_with_the_file_named(data, tmp_path):
    path = data / "annotations" / "002.json"
    path.write_text(path.read_text()[:500])  # truncated
    out = tmp_path / "out"
    for policy in ("skip", "fail"):  # a broken file is never a per-sample problem
        assert_clean_failure(index(data, out, policy), out, str(path), "malformed JSON")


def test_missing_annotations_folder(tmp_path):
    out = tmp_path / "out"
    result = index(tmp_path / "nowhere", out, "skip")
    assert_clean_failure(result, out, "nowhere/annotations", "not found")


DAMAGE = {
    "box outside the image": (
        lambda a: a.__setitem__("bbox", [600.0, 10.0, 200.0, 50.0]),
        "outside the 640x360 image",
    ),
    "non-positive distance": (
        lambda a: a.__setitem__(
            "keypoints_3d", [v if i % 4 != 2 else -abs(v) for i, v in enumerate(a["keypoints_3d"])]
        ),
        "non-positive distance",
    ),
    "missing keypoints_3d": (lambda a: a.pop("keypoints_3d"), "missing keypoints_3d"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_bad_object_fails_or_is_counted(data, tmp_path, kind):
    damage, message = DAMAGE[kind]
    ann_ids = []

    def change(doc):
        ann = doc["annotations"][0]
        damage(ann)
        ann_ids.append(ann["id"])

    path = edit_annotation(data, change)
    out = tmp_path / "fail"
    assert_clean_failure(
        index(data, out, "fail"), out, str(path), message, f"annotation {ann_ids[0]}"
    )

    out = tmp_path / "skip"
    result = index(data, out, "skip")
    assert result.returncode == 0, result.stderr
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t")
    assert len(skipped) == 1 and message in skipped["problem"].iloc[0]
    assert "skipped 1 bad samples" in result.stderr
    kept = pd.concat(pd.read_parquet(out / f"{s}.parquet") for s in SPLITS)
    assert ann_ids[0] not in set(kept["ann_id"])


def test_missing_frame_file(data, tmp_path):
    frame = data / "frames" / "001" / "rgb" / "0002.jpg"
    frame.unlink()
    out = tmp_path / "fail"
    assert_clean_failure(index(data, out, "fail"), out, str(frame), "frame file not found")
    out = tmp_path / "skip"
    assert index(data, out, "skip").returncode == 0
    kept = pd.concat(pd.read_parquet(out / f"{s}.parquet") for s in SPLITS)
    assert not ((kept["sequence"] == "001") & (kept["frame"] == 2)).any()
    assert "frame file not found" in (out / "skipped.tsv").read_text()


def test_corrupt_jpeg_at_extract(prepared, tmp_path):
    table = pd.read_parquet(prepared["train_index"])
    root = tmp_path / "motsynth"
    shutil.copytree(prepared["root"], root)
    victim = root / table["file_name"].iloc[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    n_frames = table.groupby(["sequence", "frame"]).ngroups

    def extract(out: Path, policy: str):
        return run_script(
            "scripts/distance.py",
            "extract",
            "--index",
            prepared["train_index"],
            "--root",
            root,
            "--out",
            out / "train.h5",
            "--skipped",
            out / "train.skipped.tsv",
            "--frame-size",
            "64",
            "112",
            "--crop-size",
            "32",
            "16",
            "--on-bad-sample",
            policy,
            check=False,
        )

    out = tmp_path / "fail"
    assert_clean_failure(extract(out, "fail"), out, str(victim), "not a readable image")
    out = tmp_path / "skip"
    result = extract(out, "skip")
    assert result.returncode == 0, result.stderr
    import h5py

    with h5py.File(out / "train.h5") as h5:
        assert h5["frames"].shape[0] == n_frames - 1
    assert "not a readable image" in (out / "train.skipped.tsv").read_text()


def test_index_by_hand_fills_the_schema_defaults(data, tmp_path):
    """A partial --settings (as a user typing the command writes it) runs with the defaults of
    config/schema.yaml: the same tables as the whole section spelled out."""
    from workflow.common.config import SCHEMA, load_yaml

    defaults = {
        key: spec["default"]
        for key, spec in load_yaml(SCHEMA)["$defs"]["distance_index"]["properties"].items()
    }
    full, partial = tmp_path / "full", tmp_path / "partial"
    args = ["scripts/distance.py", "index", "--root", data, "--on-bad-sample", "fail"]
    for out, settings in ((full, defaults), (partial, {"min_visibility": 0.18})):
        outputs = [f"--{s}" if i % 2 == 0 else out / f"{s}.parquet" for s in SPLITS for i in (0, 1)]
        run_script(*args, *outputs, "--skipped", out / "skipped.tsv", "--settings",
                   json.dumps(settings))  # fmt: skip
    for split in SPLITS:
        expected = pd.read_parquet(full / f"{split}.parquet")
        assert len(expected) > 0
        pd.testing.assert_frame_equal(pd.read_parquet(partial / f"{split}.parquet"), expected)


STAGE_ARGS = {
    "demo": ["--root", "{out}/demo"],
    "index": ["--root", "{out}/none", "--skipped", "{out}/s.tsv"]
    + [a for s in SPLITS for a in (f"--{s}", f"{{out}}/{s}.parquet")],
    "train": ["--train-store", "{out}/t.h5", "--val-store", "{out}/v.h5", "--run-dir", "{out}/run"]
    + ["--out", "{out}/final.ckpt"],
    "evaluate": ["--checkpoint", "{out}/c.ckpt", "--test-store", "{out}/t.h5"]
    + ["--metrics", "{out}/m.json", "--predictions", "{out}/p.parquet"]
    + ["--dataset", "d", "--experiment", "e"],
}
A_NUMBER = {"demo": "seed", "index": "min_visibility", "train": "max_epochs", "evaluate": "lr"}
BAD_SETTINGS = {
    "unknown key": lambda stage: ('{"bogus": 1}', "unknown key bogus"),
    "not JSON": lambda stage: ("{model: disnet", "not JSON"),
    "wrong type": lambda stage: (
        json.dumps({A_NUMBER[stage]: "x"}),
        f"{A_NUMBER[stage]}: 'x' is not of type",
    ),
}


@pytest.mark.parametrize("stage", sorted(STAGE_ARGS))
@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_stop_every_stage_cleanly(stage, case, tmp_path):
    out = tmp_path / "out"
    text, fragment = BAD_SETTINGS[case](stage)
    args = [a.format(out=out) for a in STAGE_ARGS[stage]]
    result = run_script("scripts/distance.py", stage, *args, "--settings", text, check=False)
    assert_clean_failure(result, out, "error: --settings: ", fragment)


def test_missing_required_key_is_named(tmp_path):
    out = tmp_path / "out"
    args = [a.format(out=out) for a in STAGE_ARGS["index"]]
    settings = '{"split_fractions": {"train": 1}}'
    result = run_script("scripts/distance.py", "index", *args, "--settings", settings, check=False)
    assert_clean_failure(
        result, out, "error: --settings: missing key split_fractions.val, split_fractions.test"
    )
