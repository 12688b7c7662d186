"""The labels CSV reader: bad rows and missing slides are InputErrors naming the culprit."""

from __future__ import annotations

import shutil

import pytest

from workflow.common.errors import InputError
from workflow.wsi.labels import read_labels


@pytest.fixture
def dataset(wsi_demo, tmp_path):
    root = tmp_path / "camelyon16"
    shutil.copytree(wsi_demo / "slides", root / "slides")
    return root


def write_csv(root, *rows, header="slide_id,label,split"):
    path = root / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def ids(root):
    return sorted(p.stem for p in (root / "slides").glob("*.tif"))


def test_camelyon_labels_any_case_and_numeric(dataset):
    a, b, *_ = ids(dataset)
    rows = read_labels(write_csv(dataset, f"{a},Tumor,train", f"{b},0,TEST"), dataset / "slides")
    assert [(r.slide_id, r.label, r.split) for r in rows] == [(a, 1, "train"), (b, 0, "test")]
    assert rows[0].path == dataset / "slides" / f"{a}.tif"


def test_missing_slide_names_the_slide_path(dataset):
    a = ids(dataset)[0]
    csv = write_csv(dataset, f"{a},normal,train", "tumor_404,tumor,val")
    with pytest.raises(InputError, match="not found") as err:
        read_labels(csv, dataset / "slides")
    assert err.value.path == str(dataset / "slides" / "tumor_404.tif")
    assert str(csv) in err.value.problem


def test_duplicate_slide_id_names_the_csv_and_the_id(dataset):
    a, b, *_ = ids(dataset)
    csv = write_csv(dataset, f"{a},normal,train", f"{b},tumor,train", f"{a},tumor,val")
    with pytest.raises(InputError, match=f"duplicate slide_id '{a}'") as err:
        read_labels(csv, dataset / "slides")
    assert err.value.path == str(csv) and "lines 2 and 4" in err.value.problem


@pytest.mark.parametrize(
    ("header", "row", "problem"),
    [
        ("slide_id,label", "{a},normal", r"missing column\(s\) \['split'\]"),
        ("slide_id,label,split", "{a},metastasis,train", "label 'metastasis'"),
        ("slide_id,label,split", "{a},normal,holdout", "split 'holdout'"),
        ("slide_id,label,split", ",normal,train", "empty slide_id"),
    ],
)
def test_malformed_rows(dataset, header, row, problem):
    csv = write_csv(dataset, row.format(a=ids(dataset)[0]), header=header)
    with pytest.raises(InputError, match=problem) as err:
        read_labels(csv, dataset / "slides")
    assert err.value.path == str(csv)


def test_missing_csv(dataset):
    with pytest.raises(InputError, match="labels CSV not found"):
        read_labels(dataset / "nope.csv", dataset / "slides")
