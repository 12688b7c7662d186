"""The synthetic FLIP demo: deterministic, img2dataset layout, planted bad samples, val set."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from tests.flip.conftest import SMALL, tar_samples
from workflow.common.errors import InputError
from workflow.flip.demo import BOMB_SIZE, PLANTED, RGB, DemoSettings, write_demo
from workflow.flip.layout import JSON_FIELDS, PARQUET_COLUMNS, list_shards, shard_files


def files_of(root):
    """Every file's bytes, the ``_stats.json`` durations (wall time) left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name.endswith("_stats.json"):
                data = {k: v for k, v in json.loads(data).items() if k != "duration"}
            out[str(p.relative_to(root))] = data
    return out


def test_same_seed_same_files_other_seed_differs(flip_demo, tmp_path):
    write_demo(tmp_path / "again", SMALL)
    assert files_of(tmp_path / "again") == files_of(flip_demo)
    write_demo(tmp_path / "other", dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    other, same = files_of(tmp_path / "other"), files_of(flip_demo)
    assert other.keys() == same.keys()
    differ = [name for name in same if name.endswith((".tar", ".parquet", ".jpg"))]
    assert differ and all(other[name] != same[name] for name in differ)


def test_shards_read_by_webdataset_with_jpg_txt_json_per_key(flip_demo, flip_manifest):
    shards = list_shards(flip_demo / "shards")
    assert [f"shards/{p.name}" for p in shards] == flip_manifest["shards"]
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False))
    keys = [s["__key__"] for s in samples]
    n = SMALL.shards * SMALL.samples_per_shard
    assert keys == [f"{i:09d}" for i in range(n)] and flip_manifest["samples"] == n
    missing = set(flip_manifest["planted"]["missing_caption"])
    for s in samples:
        expected = {"jpg", "json"} | ({"txt"} if s["__key__"] not in missing else set())
        assert {k for k in s if not k.startswith("__")} == expected
        meta = json.loads(s["json"])
        assert tuple(meta) == JSON_FIELDS and meta["key"] == s["__key__"]
        assert meta["sha256"] == hashlib.sha256(s["jpg"]).hexdigest()


def test_parquet_and_stats_match_the_tar(flip_demo):
    for shard in range(SMALL.shards):
        files = shard_files(flip_demo / "shards", shard)
        samples = tar_samples(files["tar"])
        table = pd.read_parquet(files["parquet"])
        assert tuple(table.columns) == PARQUET_COLUMNS
        assert list(table["key"]) == [k for k, _ in samples]
        for row, (_, members) in zip(table.to_dict("records"), samples, strict=True):
            assert row == {c: json.loads(members["json"])[c] for c in PARQUET_COLUMNS}
        stats = json.loads(files["stats"].read_text())
        assert stats["count"] == stats["successes"] == len(samples) == SMALL.samples_per_shard


def test_val_set_has_every_class_drawn_like_the_training_images(flip_demo, flip_manifest):
    names = (flip_demo / "classnames.txt").read_text().splitlines()
    folders = sorted(p.name for p in (flip_demo / "val").iterdir())
    assert names == [f.replace("_", " ") for f in folders] == flip_manifest["classes"]
    assert len(names) == len(SMALL.colors) * len(SMALL.shapes) == 16
    for folder in folders:
        images = sorted((flip_demo / "val" / folder).glob("*.jpg"))
        assert len(images) == SMALL.val_per_class
        with Image.open(images[0]) as img:
            assert img.size == (SMALL.image_size,) * 2 and img.format == "JPEG"
    good = set(range(flip_manifest["samples"])) - {
        int(k) for keys in flip_manifest["planted"].values() for k in keys
    }
    captions = [
        json.loads(m["json"])["caption"]
        for p in list_shards(flip_demo / "shards")
        for k, m in tar_samples(p)
        if int(k) in good
    ]
    for name in names:  # every class is described by some training caption
        assert any(name in c for c in captions), name
    for c in captions:  # ... and every caption names exactly one class, never a background one
        assert sum(name in c for name in names) == 1, c
        assert all(colour not in c.split() for colour in RGB if colour not in SMALL.colors
                   and colour != SMALL.background), c  # fmt: skip


def test_train_split_sits_beside_val_in_imagenet_layout(flip_demo, flip_manifest):
    train, val = flip_demo / "train", flip_demo / "val"
    folders = sorted(p.name for p in train.iterdir())
    assert folders == sorted(p.name for p in val.iterdir()) and len(folders) == 16
    for folder in folders:
        images = sorted((train / folder).glob("*"))
        assert [p.name for p in images] == [
            f"{folder}_{j:04d}.jpg" for j in range(SMALL.train_per_class)
        ]  # ImageNet's train/<wnid>/<wnid>_<n>.JPEG
        with Image.open(images[0]) as img:
            assert img.size == (SMALL.image_size,) * 2 and img.format == "JPEG"
    assert flip_manifest["train_images"] == 16 * SMALL.train_per_class
    train_bytes = {p.read_bytes() for p in train.rglob("*.jpg")}
    assert len(train_bytes) == flip_manifest["train_images"]  # new draws, none repeated
    assert train_bytes.isdisjoint(p.read_bytes() for p in val.rglob("*.jpg"))


def test_train_split_draws_from_its_own_stream(flip_demo, tmp_path):
    """More train images change nothing else: val images and shards come from other seeds."""
    more = dataclasses.replace(SMALL, train_per_class=SMALL.train_per_class + 3)
    write_demo(tmp_path / "more", more)
    before, after = files_of(flip_demo), files_of(tmp_path / "more")

    def others(files):
        return {k: v for k, v in files.items() if not k.startswith("train/")}

    assert others(after).keys() - {"manifest.json"} == others(before).keys() - {"manifest.json"}
    assert {k: v for k, v in others(after).items() if k != "manifest.json"} == {
        k: v for k, v in others(before).items() if k != "manifest.json"
    }
    first = "train/blue_circle/blue_circle_0000.jpg"  # the stream's first draw
    assert after[first] == before[first]
    assert sum(k.startswith("train/") for k in after) == 16 * more.train_per_class


def test_planted_bad_samples_carry_their_defect(flip_demo, flip_manifest):
    planted = flip_manifest["planted"]
    assert tuple(planted) == PLANTED
    assert flip_manifest["counts"] == {r: SMALL.bad_per_reason for r in PLANTED}
    keys = [k for ks in planted.values() for k in ks]
    assert len(set(keys)) == len(keys) == flip_manifest["samples"] - flip_manifest["good"]
    samples = dict(s for p in list_shards(flip_demo / "shards") for s in tar_samples(p))
    order = list(samples)
    meta = {k: json.loads(m["json"]) for k, m in samples.items()}
    assert all(meta[k]["NSFW"] == "NSFW" for k in planted["nsfw"])
    assert all(meta[k]["similarity"] < 0.3 for k in planted["low_similarity"])
    assert all(samples[k]["txt"].strip() == b"" for k in planted["empty_caption"])
    for k in planted["bad_caption"]:
        with pytest.raises(UnicodeDecodeError):
            samples[k]["txt"].decode("utf-8")
    for k in planted["duplicate"]:
        earlier = [samples[o]["jpg"] for o in order[: order.index(k)] if o not in keys]
        assert samples[k]["jpg"] in earlier
    for k in planted["too_small"] + planted["extreme_aspect"]:
        with Image.open(io.BytesIO(samples[k]["jpg"])) as img:
            w, h = img.size
        assert min(w, h) < 32 if k in planted["too_small"] else max(w, h) / min(w, h) > 3
    for k in planted["undecodable"]:
        with pytest.raises(OSError), Image.open(io.BytesIO(samples[k]["jpg"])) as img:
            img.load()
    for k in planted["decompression_bomb"]:
        assert len(samples[k]["jpg"]) < 10_000
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(samples[k]["jpg"]))  # 9e8 px > 2 x PIL's default limit
    assert BOMB_SIZE**2 > 2 * Image.MAX_IMAGE_PIXELS


def test_settings_without_room_stop_before_writing(tmp_path):
    with pytest.raises(InputError, match="unknown colours"):
        write_demo(tmp_path / "d", DemoSettings(colors=("red", "teal")))
    with pytest.raises(InputError, match="also a class colour"):
        write_demo(tmp_path / "d", DemoSettings(colors=("red", "gray")))
    with pytest.raises(InputError, match="no room"):
        write_demo(tmp_path / "d", DemoSettings(shards=1, samples_per_shard=10))
    with pytest.raises(InputError, match="train_per_class 1"):
        write_demo(tmp_path / "d", DemoSettings(train_per_class=1))
    assert not (tmp_path / "d").exists()
