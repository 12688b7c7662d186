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
    return Path(shutil.copytree(demo_root, tmp_path / "motsynth"))


def index(root: Path, out: Path, policy: str, settings: dict | None = None):
    args = [
        "scripts/distance.py",
        "index",
        "--root",
        root,
        "--skipped",
        out / "skipped.tsv",
        "--settings",
        json.dumps(settings or INDEX_SETTINGS),
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
    "keypoints_3d a string": (
        lambda a: a.__setitem__("keypoints_3d", "0.1 0.2 5.0 2"),
        "keypoints_3d must be 22x4 finite numbers, got '0.1 0.2 5.0 2'",
    ),
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
    config/schema/distance.yaml: the same tables as the whole section spelled out."""
    from workflow.common.config import load_schema

    defaults = {
        key: spec["default"]
        for key, spec in load_schema().definition("distance_index")["properties"].items()
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


# --- hostile annotation files: every field the reader uses is checked -----------------------


def read_damaged(demo_root: Path, tmp_path: Path, change, policy: str):
    """``read_sequence`` of the demo's 001.json after ``change(doc)``, frames from the demo."""
    from workflow.common.errors import Skips
    from workflow.distance.motsynth import read_sequence

    doc = json.loads((demo_root / "annotations" / "001.json").read_text())
    change(doc)
    path = tmp_path / "annotations" / "001.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    skips = Skips()
    name, rows = read_sequence(path, demo_root, "feet", policy, skips=skips)
    return doc, rows, skips


def first_ann(key: str, value):
    return lambda doc: doc["annotations"][0].__setitem__(key, value)


def first_kp(position: int, value):
    return lambda doc: doc["annotations"][0]["keypoints_3d"].__setitem__(position, value)


FIELD_DAMAGE = {
    "entry a list": (lambda d: d["annotations"].__setitem__(0, [1, 2]), "not a JSON object"),
    "entry a number": (lambda d: d["annotations"].__setitem__(0, 7), "not a JSON object"),
    "id a string": (first_ann("id", "seven"), "id must be an integer >= 0, got 'seven'"),
    "id negative": (first_ann("id", -3), "id must be an integer >= 0"),
    "image_id a list": (first_ann("image_id", [1]), "image_id must be an integer >= 0"),
    "image_id unknown": (first_ann("image_id", 999), "image_id 999 not in images"),
    "bbox of booleans": (first_ann("bbox", [True, 1, 20, 30]), "bbox must be 4 finite numbers"),
    "bbox a string": (first_ann("bbox", "1 2 3 4"), "bbox must be 4 finite numbers"),
    "bbox with NaN": (first_ann("bbox", [1, 2, float("nan"), 4]), "bbox must be 4 finite"),
    "keypoints_3d a number": (first_ann("keypoints_3d", 5), "got 5"),
    "keypoints_3d short": (
        lambda d: d["annotations"][0]["keypoints_3d"].pop(),
        "keypoints_3d must be 22x4 finite numbers, got 87 values",
    ),
    "keypoint a string": (first_kp(5, "1.0"), "got '1.0' at position 5"),
    "keypoint null": (first_kp(2, None), "got None at position 2"),
    "keypoint infinite": (first_kp(0, float("inf")), "got inf at position 0"),
    "visibility flag 7": (first_kp(3, 7), "visibility flags must be 0, 1 or 2, got [7.0]"),
    "ped_id a string": (first_ann("ped_id", "p1"), "ped_id must be an integer >= 0"),
    "ped_id a fraction": (first_ann("ped_id", 1.5), "ped_id must be an integer >= 0"),
}


@pytest.mark.parametrize("kind", sorted(FIELD_DAMAGE))
def test_malformed_annotation_is_a_bad_sample(demo_root, tmp_path, kind):
    """A malformed field of one annotation drops that object alone (or stops under fail)."""
    from workflow.common.errors import InputError

    change, message = FIELD_DAMAGE[kind]
    _, clean, _ = read_damaged(demo_root, tmp_path, lambda doc: None, "fail")
    doc, rows, skips = read_damaged(demo_root, tmp_path, change, "skip")
    assert len(skips) == 1 and message in skips.rows[0][2], skips.rows
    item = skips.rows[0][1]
    assert item == "annotation #0" or item == f"annotation {clean[0]['ann_id']}", item
    assert [r["ann_id"] for r in rows] == [r["ann_id"] for r in clean[1:]]
    with pytest.raises(InputError, match="annotation") as err:
        read_damaged(demo_root, tmp_path, change, "fail")
    assert message in err.value.problem and err.value.path.endswith("001.json")


def first_image(key: str, value, position: int = 0):
    return lambda doc: doc["images"][position].__setitem__(key, value)


IMAGE_DAMAGE = {
    "width a string": (first_image("width", "640"), 0, "image width must be an integer >= 1"),
    "height zero": (first_image("height", 0), 0, "image height must be an integer >= 1"),
    "frame_n negative": (first_image("frame_n", -1), 0, "image frame_n must be an integer >= 0"),
    "file_name absolute": (
        first_image("file_name", "/etc/passwd"),
        0,
        "points outside the dataset root",
    ),
    "file_name climbs out": (first_image("file_name", "../x.jpg"), 0, "points outside"),
    "frame_n twice": (
        lambda doc: doc["images"][1].__setitem__("frame_n", doc["images"][0]["frame_n"]),
        1,
        "frame_n 0 is also image",
    ),
}


@pytest.mark.parametrize("kind", sorted(IMAGE_DAMAGE))
def test_malformed_image_entry_drops_its_frame(demo_root, tmp_path, kind):
    """A bad ``images`` entry is one bad frame: counted once, its objects go with it."""
    from workflow.common.errors import InputError

    change, victim, message = IMAGE_DAMAGE[kind]
    doc, rows, skips = read_damaged(demo_root, tmp_path, change, "skip")
    victim_id = doc["images"][victim]["id"]
    assert [(item, message in problem) for _, item, problem in skips.rows] == [
        (f"image {victim_id}", True)
    ]
    assert rows and victim_id not in {r["image_id"] for r in rows}
    with pytest.raises(InputError, match=f"image {victim_id}: .*{message}"):
        read_damaged(demo_root, tmp_path, change, "fail")


FILE_DAMAGE = {
    "seq_name a number": (lambda d: d["info"].__setitem__("seq_name", 5), "info.seq_name must"),
    "seq_name empty": (lambda d: d["info"].__setitem__("seq_name", " "), "info.seq_name must"),
    "fx a boolean": (lambda d: d["info"].__setitem__("fx", True), "info.fx missing or invalid"),
    "cy NaN": (lambda d: d["info"].__setitem__("cy", float("nan")), "info.cy missing or invalid"),
    "annotations an object": (
        lambda d: d.__setitem__("annotations", {}),
        "'images' and 'annotations' must be lists",
    ),
}


@pytest.mark.parametrize("policy", ["skip", "fail"])
@pytest.mark.parametrize("kind", sorted(FILE_DAMAGE))
def test_malformed_file_structure_stops(demo_root, tmp_path, kind, policy):
    """Damage to what every row of the file depends on is never a per-sample problem."""
    from workflow.common.errors import BadSample, InputError

    change, message = FILE_DAMAGE[kind]
    with pytest.raises(InputError, match=message) as err:
        read_damaged(demo_root, tmp_path, change, policy)
    assert not isinstance(err.value, BadSample) and err.value.path.endswith("001.json")


def test_deeply_nested_json_stops_cleanly(data, tmp_path):
    path = data / "annotations" / "002.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    out = tmp_path / "out"
    assert_clean_failure(index(data, out, "skip"), out, str(path), "malformed JSON")


@pytest.mark.parametrize("kind", ["a list", "a number"])
def test_annotation_not_an_object_at_index(data, tmp_path, kind):
    """The tester's traceback: an ``annotations`` entry that is not an object."""
    entry = [1, 2, 3] if kind == "a list" else 42
    path = edit_annotation(data, lambda doc: doc["annotations"].__setitem__(0, entry))
    out = tmp_path / "fail"
    assert_clean_failure(
        index(data, out, "fail"), out, str(path), "annotation #0: annotation is not a JSON object"
    )
    out = tmp_path / "skip"
    result = index(data, out, "skip")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 bad samples" in result.stderr


# --- duplicates -------------------------------------------------------------------------------


def duplicate_same_id(doc) -> None:
    doc["annotations"] += [dict(a) for a in doc["annotations"][:3]]


def duplicate_same_object(doc) -> None:
    top = max(a["id"] for a in doc["annotations"])
    doc["annotations"] += [{**a, "id": top + k + 1} for k, a in enumerate(doc["annotations"][:3])]


DUPLICATES = {
    "same id": (duplicate_same_id, "duplicate annotation id"),
    "same object": (duplicate_same_object, "duplicate object: ped_id"),
}


@pytest.mark.parametrize("kind", sorted(DUPLICATES))
def test_duplicate_annotations_are_counted(data, tmp_path, kind):
    """Rows listed twice are bad samples: the first copy is kept, later ones are counted."""
    change, message = DUPLICATES[kind]
    originals = []
    path = edit_annotation(
        data, lambda doc: (originals.extend(doc["annotations"][:3]), change(doc))
    )
    out = tmp_path / "fail"
    assert_clean_failure(index(data, out, "fail"), out, str(path), message)

    out = tmp_path / "skip"
    result = index(data, out, "skip")
    assert result.returncode == 0, result.stderr
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t")
    assert len(skipped) == 3 and skipped["problem"].str.contains(message).all()
    kept = pd.concat(pd.read_parquet(out / f"{s}.parquet") for s in SPLITS)
    assert not kept["ann_id"].duplicated().any()
    assert not kept.duplicated(["sequence", "image_id", "ped_id"]).any()
    visible = kept.loc[kept["sequence"] == "001", "ann_id"]
    assert {a["id"] for a in originals} & set(visible), "the first copies are kept"


# --- split leaks and partial outputs ----------------------------------------------------------


def test_two_files_claiming_one_sequence_stop(data, tmp_path):
    """Splits are by file: a second file naming the same sequence could land in another."""
    first = data / "annotations" / "001.json"
    second = data / "annotations" / "101.json"
    shutil.copy(first, second)
    out = tmp_path / "out"
    for policy in ("skip", "fail"):
        result = index(data, out, policy)
        assert_clean_failure(
            result, out, f"{second}: sequence name '001' is also claimed by {first}"
        )


def test_sequence_in_two_split_lists_stops(data, tmp_path):
    lists = {"train": ["000", "001", "002"], "val": ["003", "001"], "test": ["004"]}
    out = tmp_path / "out"
    result = index(data, out, "fail", {**INDEX_SETTINGS, "split_sequences": lists})
    assert_clean_failure(
        result,
        out,
        "error: distance.index.split_sequences: sequence '001' is listed under both train and val",
    )


def test_sequence_in_two_split_tables_is_refused(tmp_path):
    from workflow.common.errors import InputError
    from workflow.distance.index import check_disjoint

    tables = {
        "train": pd.DataFrame({"sequence": ["000", "001"]}),
        "val": pd.DataFrame({"sequence": ["002"]}),
        "test": pd.DataFrame({"sequence": ["003", "001"]}),
    }
    with pytest.raises(InputError, match="sequence '001' is in both the train and test splits"):
        check_disjoint(tables, tmp_path)
    check_disjoint({**tables, "test": pd.DataFrame({"sequence": ["003"]})}, tmp_path)


def test_failed_index_writes_nothing(data, tmp_path):
    """An empty test split is found before train and val are written."""
    lists = {"train": ["000", "001", "002"], "val": ["003"], "test": []}
    out = tmp_path / "out"
    result = index(data, out, "skip", {**INDEX_SETTINGS, "split_sequences": lists})
    assert_clean_failure(result, out, "no valid objects in the test split")


# --- a damaged index table at extract ---------------------------------------------------------


def extract(index_path: Path, root: Path, out: Path):
    return run_script(
        "scripts/distance.py", "extract", "--index", index_path, "--root", root,
        "--out", out / "train.h5", "--skipped", out / "train.skipped.tsv",
        "--frame-size", "64", "112", "--crop-size", "32", "16", "--on-bad-sample", "fail",
        check=False,
    )  # fmt: skip


def test_index_without_a_column_at_extract(prepared, tmp_path):
    table = pd.read_parquet(prepared["train_index"]).drop(columns=["img_w", "fy"])
    path = tmp_path / "train.parquet"
    table.to_parquet(path)
    out = tmp_path / "out"
    result = extract(path, prepared["root"], out)
    assert_clean_failure(result, out, f"{path}: index lacks column(s) fy, img_w")


def set_cell(column: str, value):
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table = table.astype({column: object}) if isinstance(value, str) else table
        table.loc[table.index[0], column] = value
        return table

    return change


TABLE_DAMAGE = {
    "NaN box": (set_cell("x", float("nan")), "index column x has 1 invalid value(s)"),
    "zero width": (set_cell("w", 0.0), "index column w has 1 invalid value(s)"),
    "zero image height": (set_cell("img_h", 0.0), "index column img_h has 1 invalid value(s)"),
    "text distance": (lambda t: t.astype({"distance": str}), "column distance is not numeric"),
    "absolute file": (set_cell("file_name", "/etc/hostname"), "points outside the dataset root"),
    "empty sequence": (set_cell("sequence", ""), "index column sequence has empty or non-text"),
    "two files per frame": (
        lambda t: t.assign(file_name=[f"frames/x/{i}.jpg" for i in range(len(t))]),
        "index names several files for frame",
    ),
    "no rows": (lambda t: t.iloc[:0], "index has no rows"),
}


@pytest.mark.parametrize("kind", sorted(TABLE_DAMAGE))
def test_damaged_index_table_is_refused(prepared, tmp_path, kind):
    from workflow.common.errors import InputError
    from workflow.distance.store import read_index

    change, message = TABLE_DAMAGE[kind]
    path = tmp_path / "train.parquet"
    change(pd.read_parquet(prepared["train_index"])).to_parquet(path)
    with pytest.raises(InputError, match="index") as err:
        read_index(path)
    assert message in err.value.problem and err.value.path == str(path)
