"""The FLIP shard filter: exact per-reason counts on the demo, bad input, atomic outputs, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import tarfile

import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from tests.conftest import ROOT
from tests.flip.conftest import FILTER, sample, tar_samples, write_tar
from workflow.common.config import stage_settings
from workflow.common.errors import BadSample, InputError
from workflow.flip.demo import FILTER_ASSUMES, PLANTED, bomb_header
from workflow.flip.filter import DEFAULTS, REASONS, filter_shards
from workflow.flip.layout import PARQUET_COLUMNS, list_shards, shard_files


def script(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts/flip.py"), *args]


def good_keys(manifest: dict) -> list[str]:
    bad = {k for keys in manifest["planted"].values() for k in keys}
    return [f"{i:09d}" for i in range(manifest["samples"]) if f"{i:09d}" not in bad]


def test_counts_match_the_planted_bad_samples_exactly(flip_filtered, flip_manifest):
    out, counts = flip_filtered
    assert set(PLANTED) < set(REASONS)
    assert counts["dropped"] == {r: flip_manifest["counts"].get(r, 0) for r in REASONS}
    assert counts["kept"] == flip_manifest["good"] == len(good_keys(flip_manifest))
    assert counts["samples"] == flip_manifest["samples"]
    per_shard = counts["shards"].values()
    for reason in ("kept", "samples", *REASONS):
        total = counts["dropped"].get(reason, counts.get(reason))
        assert sum(c[reason] for c in per_shard) == total
    assert json.loads((out / "counts.json").read_text()) == json.loads(json.dumps(counts))


def test_kept_samples_are_exactly_the_good_keys(flip_filtered, flip_manifest, flip_demo):
    out, counts = flip_filtered
    shards = list_shards(out)
    assert len(shards) == counts["output_shards"] == math.ceil(counts["kept"] / 70)
    kept = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in kept] == good_keys(flip_manifest)
    source = dict(s for p in list_shards(flip_demo / "shards") for s in tar_samples(p))
    for s in kept:  # bytes pass through unchanged
        assert {e: s[e] for e in ("jpg", "txt", "json")} == source[s["__key__"]]
    dropped = pd.read_parquet(out / "dropped.parquet")
    by_reason = dropped.groupby("reason")["key"].apply(list).to_dict()
    assert by_reason == {r: keys for r, keys in flip_manifest["planted"].items() if keys}


def test_output_parquet_and_stats_agree_with_the_tars(flip_filtered):
    out, counts = flip_filtered
    sizes = []
    for shard in range(counts["output_shards"]):
        files = shard_files(out, shard)
        samples = tar_samples(files["tar"])
        table = pd.read_parquet(files["parquet"])
        assert tuple(table.columns) == PARQUET_COLUMNS
        assert list(table["key"]) == [k for k, _ in samples]
        for row, (_, m) in zip(table.to_dict("records"), samples, strict=True):
            assert row["sha256"] == hashlib.sha256(m["jpg"]).hexdigest()
            assert row["caption"] == m["txt"].decode()
        stats = json.loads(files["stats"].read_text())
        assert stats["count"] == stats["successes"] == len(samples)
        sizes.append(len(samples))
    assert sizes[:-1] == [FILTER["shard_size"]] * (len(sizes) - 1) and sum(sizes) == counts["kept"]


def test_settings_move_the_thresholds(flip_demo, flip_manifest, tmp_path):
    s = {"shard_size": 1000, "min_similarity": 0.0, "nsfw_tags": [], "min_size": 8,
         "max_aspect": 5.0}  # fmt: skip
    counts = filter_shards(list_shards(flip_demo / "shards"), tmp_path, s)
    for reason in ("nsfw", "low_similarity", "too_small", "extreme_aspect"):
        assert counts["dropped"][reason] == 0
    assert counts["kept"] == flip_manifest["good"] + 4 * 2
    assert stage_settings({}, "flip_filter") == DEFAULTS
    assert FILTER_ASSUMES.items() <= DEFAULTS.items()  # the demo plants against the defaults


GOOD_JPG = sample()[1]["jpg"]
BAD = {
    "undecodable": {"jpg": GOOD_JPG[: len(GOOD_JPG) // 2]},
    "missing_caption": {"txt": None},
    "bad_caption": {"txt": "a red caf\xe9".encode("latin-1")},
    "decompression_bomb": {"jpg": bomb_header(GOOD_JPG)},
    "bad_metadata": {"json": b"{not json"},
    "empty_caption": {"txt": b"  \n"},
}


@pytest.mark.parametrize("reason", list(BAD))
def test_damaged_sample_is_counted_and_dropped(reason, tmp_path):
    shard = write_tar(
        tmp_path / "00000.tar",
        [sample("000000000"), sample("000000001", **BAD[reason]), sample("000000002")],
    )
    counts = filter_shards([shard], tmp_path / "out", {})
    assert counts["kept"] == 2
    assert {r: n for r, n in counts["dropped"].items() if n} == {reason: 1}
    kept = [k for k, _ in tar_samples(tmp_path / "out" / "00000.tar")]
    assert kept == ["000000000", "000000002"]


def test_max_pixels_sets_the_bomb_limit_and_is_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's own check off
    shard = write_tar(tmp_path / "00000.tar", [sample(jpg=bomb_header(GOOD_JPG, 2000))])
    counts = filter_shards([shard], tmp_path / "a", {"max_pixels": 1_000_000})  # 4e6 px
    assert counts["dropped"]["decompression_bomb"] == 1 and counts["kept"] == 0
    counts = filter_shards([shard], tmp_path / "b", {"max_pixels": 5_000_000})
    assert counts["dropped"]["decompression_bomb"] == 0  # under the limit: decoded (libjpeg pads)
    assert Image.MAX_IMAGE_PIXELS is None  # restored


def test_on_bad_sample_fail_stops_and_leaves_nothing(flip_demo, tmp_path):
    shards = list_shards(flip_demo / "shards")
    with pytest.raises(BadSample) as err:
        filter_shards(shards, tmp_path / "out", {}, "fail")
    assert err.value.path in {str(p) for p in shards}
    assert list((tmp_path / "out").iterdir()) == []


def truncated(src, dst, at: int):
    dst.write_bytes(src.read_bytes()[:at])
    return dst


def last_member_offset(path) -> int:
    with tarfile.open(path) as tar:
        return tar.getmembers()[-1].offset


@pytest.mark.parametrize("damage", ["missing", "not_a_tar", "random_blocks", "half", "boundary"])
def test_damaged_shard_file_is_an_input_error_leaving_no_output(damage, flip_demo, tmp_path):
    good = shard_files(flip_demo / "shards", 0)["tar"]
    bad = tmp_path / "00001.tar"
    if damage == "not_a_tar":
        bad.write_text("key,url,caption\n")
    elif damage == "random_blocks":
        bad.write_bytes(hashlib.sha256(b"x").digest() * 320)  # 10240 bytes, no zero end
    elif damage == "half":
        truncated(good, bad, good.stat().st_size // 2)
    elif damage == "boundary":  # ends cleanly after a member: only the end marker is missing
        truncated(good, bad, last_member_offset(good))
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        filter_shards([good, bad], out, {})  # the good shard is read first
    assert err.value.path == str(bad)
    assert not out.exists() or list(out.iterdir()) == []


def test_rerun_replaces_stale_shards(flip_demo, tmp_path):
    shards = list_shards(flip_demo / "shards")
    filter_shards(shards, tmp_path, {"shard_size": 50})
    counts = filter_shards(shards, tmp_path, {"shard_size": 1000})
    assert [p.name for p in list_shards(tmp_path)] == ["00000.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000.parquet", "00000.tar", "00000_stats.json", "counts.json", "dropped.parquet",
    ]  # fmt: skip
    assert len(tar_samples(tmp_path / "00000.tar")) == counts["kept"]


@pytest.mark.parametrize("damage", ["missing", "half", "settings"])
def test_cli_bad_input_exits_2_with_one_error_line(damage, flip_demo, tmp_path):
    good = shard_files(flip_demo / "shards", 0)["tar"]
    bad, settings = tmp_path / "00000.tar", "{}"
    if damage == "half":
        truncated(good, bad, good.stat().st_size // 2)
    elif damage == "settings":
        bad, settings = good, '{"min_size": "big"}'
    args = ["filter", "--shards", str(bad), "--out", str(tmp_path / "out")]
    result = subprocess.run(script(*args, "--settings", settings), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    where = "--settings" if damage == "settings" else str(bad)
    assert len(errors) == 1 and errors[0].startswith(f"error: {where}: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_filters_the_demo(flip_demo, flip_manifest, tmp_path):
    shards = [str(p) for p in list_shards(flip_demo / "shards")]
    result = subprocess.run(
        script("filter", "--shards", *shards, "--out", str(tmp_path), "--settings", "{}"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["kept"] == flip_manifest["good"]
    assert f"kept {flip_manifest['good']} of {flip_manifest['samples']}" in result.stderr


def test_cli_help_for_every_stage():
    for stage in (
        [],
        ["demo"],
        ["hash"],
        ["dedup"],
        ["filter"],
        ["train"],
        ["evaluate"],
        ["figures"],
    ):
        result = subprocess.run(script(*stage, "--help"), capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout
