"""The FLIP shard filter: exact per-reason counts on the demo, bad input, atomic outputs, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import shutil
import subprocess
import sys
import tarfile

import pandas as pd
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from tests.conftest import ROOT
from tests.flip.conftest import FILTER, sample, tar_samples, write_tar
from workflow.common.config import stage_settings
from workflow.common.errors import BadSample, InputError
from workflow.flip.dedup_hash import hash_group
from workflow.flip.demo import FILTER_ASSUMES, PLANTED, bomb_header
from workflow.flip.filter import filter_shards
from workflow.flip.filter_checks import DAMAGE, DEFAULTS, REASONS, filter_settings
from workflow.flip.layout import PARQUET_COLUMNS, list_shards, shard_files, write_parquet


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
    resolved = filter_settings(DEFAULTS, "laion400m")  # the demo's profile
    assert {k: resolved[k] for k in FILTER_ASSUMES} == FILTER_ASSUMES  # planted against these
    assert resolved["min_similarity"] == 0.3 and DEFAULTS["min_similarity"] is None


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


def damaged_header(src, dst, member: int, block: bytes):
    """``src`` with the header of its ``member``-th member overwritten by ``block``."""
    with tarfile.open(src) as tar:
        at = tar.getmembers()[member].offset
    data = bytearray(src.read_bytes())
    data[at : at + 512] = block
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    "damage",
    ["missing", "not_a_tar", "random_blocks", "half", "boundary", "bad_header", "zero_header",
     "joined"],
)  # fmt: skip
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
    elif damage in ("bad_header", "zero_header"):  # tarfile would stop there without a word
        damaged_header(good, bad, 30, b"\x7f" * 512 if damage == "bad_header" else bytes(512))
    elif damage == "joined":  # two tars concatenated: tarfile reads the first only
        bad.write_bytes(good.read_bytes() + good.read_bytes())
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


def cut_short(src_folder, dst_folder, keep: int, index: tuple[str, ...] = ("parquet", "stats")):
    """Shard 0 of ``src_folder`` rewritten as a valid tar of its first ``keep`` samples (a tar
    cut short at a member boundary and re-terminated), beside copies of its ``index`` files."""
    src, dst = shard_files(src_folder, 0), shard_files(dst_folder, 0)
    write_tar(dst["tar"], tar_samples(src["tar"])[:keep])
    for name in index:
        shutil.copy(src[name], dst[name])
    return dst


@pytest.mark.parametrize("index", [("stats",), ("parquet",), ("parquet", "stats")])
def test_a_shard_shorter_than_its_index_files_is_an_input_error(index, flip_demo, tmp_path):
    files = cut_short(flip_demo / "shards", tmp_path / "in", 51, index)
    says = "00000_stats.json says 100" if "stats" in index else "00000.parquet lists 100"
    with pytest.raises(InputError, match=f"^.*: 51 samples but {says}") as err:
        filter_shards([files["tar"]], tmp_path / "out", {})
    assert err.value.path == str(files["tar"])
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    with pytest.raises(InputError, match="51 samples but"):  # the hash stage reads the same
        hash_group([files["tar"]], {}, tmp_path / "hash.parquet")
    assert not (tmp_path / "hash.parquet").exists()


def test_a_shard_with_other_keys_than_its_parquet_is_an_input_error(flip_demo, tmp_path):
    files = cut_short(flip_demo / "shards", tmp_path, 100, ("parquet",))
    table = pd.read_parquet(files["parquet"])
    table.loc[7, "key"] = "000999999"
    write_parquet(files["parquet"], table.to_dict("records"))
    with pytest.raises(InputError, match="sample 7 has key 000000007 but 00000.parquet lists "
                       "000999999 there"):  # fmt: skip
        filter_shards([files["tar"]], tmp_path / "out", {})


def test_failed_downloads_in_the_parquet_are_not_samples(tmp_path):
    """img2dataset's parquet has a row per URL tried, its stats count them in ``count``."""
    files = shard_files(tmp_path, 0)
    write_tar(files["tar"], [sample("000000000"), sample("000000002")])
    status = ["success", "failed_to_download", "success", "failed_to_resize"]
    rows = [{"key": f"00000000{i}", "status": s} for i, s in enumerate(status)]
    write_parquet(files["parquet"], rows)
    files["stats"].write_text(json.dumps({"count": 4, "successes": 2}))
    assert filter_shards([files["tar"]], tmp_path / "out", {})["kept"] == 2


@pytest.mark.parametrize(
    ("name", "text"),
    [("stats", "{not json"), ("stats", '{"count": 100}'), ("stats", '{"successes": "100"}'),
     ("stats", '{"successes": -1}'), ("parquet", "PAR1 not a parquet")],
)  # fmt: skip
def test_an_unreadable_index_file_is_an_input_error_naming_it(name, text, flip_demo, tmp_path):
    files = cut_short(flip_demo / "shards", tmp_path, 100)
    files[name].write_text(text)
    with pytest.raises(InputError) as err:
        filter_shards([files["tar"]], tmp_path / "out", {})
    assert err.value.path == str(files[name])


def test_shards_without_index_files_are_read_with_one_warning(tmp_path, caplog):
    shards = [write_tar(tmp_path / f"0000{i}.tar", [sample(f"00000000{i}")]) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="lsai.flip.filter"):
        counts = filter_shards(shards, tmp_path / "out", {})
    assert counts["kept"] == 3
    warned = [r.getMessage() for r in caplog.records if "cannot be told" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("3 of 3 shards have no img2dataset")


def test_cli_cut_short_shard_exits_2_naming_it(flip_demo, tmp_path):
    files = cut_short(flip_demo / "shards", tmp_path, 51)
    args = ["filter", "--shards", str(files["tar"]), "--out", str(tmp_path / "out")]
    result = subprocess.run(script(*args), capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {files['tar']}: 51 samples but 00000_stats.json says 100 (cut "
                      "short and re-terminated, or files of different runs?)"]  # fmt: skip


@pytest.mark.parametrize(
    "similarity", [b"NaN", b"Infinity", b"-Infinity", b"true", b'"0.9"', b"null", b"1" * 400]
)
def test_a_similarity_that_is_no_finite_number_counts_as_low(similarity, tmp_path):
    meta = b'{"NSFW": "UNLIKELY", "similarity": ' + similarity + b"}"
    shard = write_tar(tmp_path / "00000.tar", [sample("000000000", json=meta), sample()])
    counts = filter_shards([shard], tmp_path / "out", {"min_similarity": -1e9})
    assert {r: n for r, n in counts["dropped"].items() if n} == {"low_similarity": 1}
    assert counts["kept"] == 1


@pytest.mark.parametrize("where", ["in_a_row", "apart", "other_shard", "copy_is_bad"])
def test_a_repeated_key_is_damage_and_the_first_copy_is_kept(where, tmp_path):
    first = sample("000000005")
    change = {"json": b"{not json"} if where == "copy_is_bad" else {"txt": b"a second square"}
    second = sample("000000005", **change)
    if where == "other_shard":
        shards = [write_tar(tmp_path / "00000.tar", [first, sample("000000006")]),
                  write_tar(tmp_path / "00001.tar", [second])]  # fmt: skip
    else:  # in a row: one sample written twice, its members KEY.jpg KEY.json KEY.txt KEY.jpg ...
        order = [first, second, sample("000000006")]
        if where == "apart":
            order = [first, sample("000000006"), second]
        shards = [write_tar(tmp_path / "00000.tar", order)]
    counts = filter_shards(shards, tmp_path / "out", {})
    assert {r: n for r, n in counts["dropped"].items() if n} == {"duplicate_key": 1}
    kept = dict(s for p in list_shards(tmp_path / "out") for s in tar_samples(p))
    assert sorted(kept) == ["000000005", "000000006"]
    assert kept["000000005"]["txt"] == b"a red square"  # the first copy
    out_keys = pd.read_parquet(tmp_path / "out" / "00000.parquet")["key"].tolist()
    assert sorted(out_keys) == sorted(kept)
    dropped = pd.read_parquet(tmp_path / "out" / "dropped.parquet").to_dict("records")
    assert [(d["key"], d["reason"]) for d in dropped] == [("000000005", "duplicate_key")]
    assert "duplicate_key" in DAMAGE
    with pytest.raises(BadSample, match="sample 000000005: duplicate_key"):
        filter_shards(shards, tmp_path / "fail", {}, "fail")


def raw_tar(path, members: list[tuple[bytes, bytes]]):
    """A tar of (raw member name, data), names written as they are (GNU format)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.decode("latin-1"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_key_that_is_empty_or_not_utf8_is_damage(tmp_path):
    _, good = sample()
    members = [(b"k\xff1." + ext.encode(), good[ext]) for ext in sorted(good)]
    members += [(b"." + ext.encode(), good[ext]) for ext in sorted(good)]
    shard = raw_tar(tmp_path / "00000.tar", members)
    counts = filter_shards([shard], tmp_path / "out", {})
    assert counts["dropped"]["bad_key"] == 2 and counts["kept"] == 0
    dropped = pd.read_parquet(tmp_path / "out" / "dropped.parquet")
    assert dropped["key"].tolist() == ["k\\udcff1", ""]


def test_metadata_of_odd_types_keeps_the_output_index_writable(tmp_path):
    meta = {"NSFW": "UNLIKELY", "similarity": 0.4, "width": "wide", "height": 1e3, "caption": 5,
            "url": "\udcff", "key": "not the key", "status": "failed_to_download",
            "original_width": 10**30}  # fmt: skip
    deep = b"[" * 100_000  # json recursion
    shard = write_tar(
        tmp_path / "00000.tar",
        [sample("000000000", json=json.dumps(meta).encode()), sample("000000001", json=deep)],
    )
    counts = filter_shards([shard], tmp_path / "out", {})
    assert counts["kept"] == 1 and counts["dropped"]["bad_metadata"] == 1
    [row] = pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()
    assert row["key"] == "000000000" and row["status"] == "success"  # the tar's sample
    assert row["similarity"] == 0.4
    assert [row[c] for c in ("caption", "url", "width", "height", "original_width")] == [None] * 5
    kept = tar_samples(tmp_path / "out" / "00000.tar")
    assert json.loads(kept[0][1]["json"]) == meta  # passed through as it was


def test_every_reason_is_documented():
    from workflow.flip import filter as module

    for reason in REASONS:
        assert f"``{reason}``" in module.__doc__, reason
    assert DAMAGE < set(REASONS)
