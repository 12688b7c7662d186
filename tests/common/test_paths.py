"""Paths and names read from inside a dataset stay inside it (lexically: symlinks still read)."""

import pytest

from workflow.common.errors import InputError
from workflow.common.paths import inside, plain_name


@pytest.mark.parametrize("name", ["images/a.png", "./images/a.png", "a/../b.png", "a b $(x).png"])
def test_a_path_inside_the_dataset_is_kept(name):
    assert inside("/data/scan", name, "t.json").parts[:3] == ("/", "data", "scan")


@pytest.mark.parametrize("name", ["../a.png", "/etc/passwd", "images/../../a.png", "", "..\\a"])
def test_a_path_leaving_the_dataset_is_refused(name):
    with pytest.raises(InputError, match="leaves the dataset folder") as err:
        inside("/data/scan", name, "t.json")
    assert err.value.path == "t.json"


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "..", "", "a\nb"])
def test_a_name_that_would_make_a_path_is_refused(name):
    with pytest.raises(InputError, match="cannot name a file"):
        plain_name(name, "labels.csv", "slide_id")


def test_a_plain_name_is_kept():
    assert plain_name("tumor_001 (2).tif", "labels.csv") == "tumor_001 (2).tif"
