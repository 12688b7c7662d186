"""Duplicates across filter groups: hash per group, one dedup job per bucket, filter per group
keeps exactly what one filter over every shard keeps, whatever the bucket count."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.benchmarks import flip_dedup_benchmark as bench
from tests.conftest import ROOT
from tests.flip.conftest import FILTER, sample, tar_samples, write_tar
from workflow.common.errors import InputError
from workflow.flip.dedup import FORMAT_META
from workflow.flip.dedup_buckets import find_later_copies
from workflow.flip.dedup_hash import hash_group
from workflow.flip.dedup_verdicts import read_later_copies
from workflow.flip.filter import filter_shards
from workflow.flip.layout import list_shards, shard_files
from workflow.flip.sources import DUPLICATES, duplicate_tables


def kept_keys(folder: Path) -> list[str]:
    return [k for shard in list_shards(folder) for k, _ in tar_samples(shard)]


def by_groups(
    groups: list[list[Path]], tmp: Path, dedup: bool = True, buckets: int = 1
) -> tuple[list, dict]:
    """Hash, dedup and filter ``groups`` as the rules do: (kept keys, dropped per reason and
    the dedup counts summed over the buckets)."""
    settings = {**FILTER, "dedup_buckets": buckets}
    hashes = [tmp / f"hash{g}.parquet" for g in range(len(groups))]
    for shards, out in zip(groups, hashes, strict=True):
        hash_group(shards, settings, out)
    tables = [tmp / "duplicates.parquet" / f"bucket{b}.parquet" for b in range(buckets)]
    counts: dict = {}
    for b, out in enumerate(tables):
        for name, n in find_later_copies(hashes, b, out).items():
            counts[name] = counts.get(name, 0) + n
    kept, dropped = [], {}
    for g, shards in enumerate(groups):
        later = read_later_copies(tables, shards) if dedup else None
        result = filter_shards(shards, tmp / f"group{g}", settings, "skip", later)
        kept += kept_keys(tmp / f"group{g}")
        for reason, n in result["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    return kept, {"dropped": dropped, **counts}


@pytest.fixture
def copies(flip_demo: Path, tmp_path: Path) -> list[Path]:
    """The demo's 3 shards and a fourth with copies of shard 0's images: a good caption on a
    copy of a kept image, and a good one on a copy of an image kept only as a later copy."""
    shards = list_shards(flip_demo / "shards")
    first = dict(tar_samples(shards[0]))
    filter_shards([shards[0]], tmp_path / "ref0", FILTER)
    kept = kept_keys(tmp_path / "ref0")
    copy_a = sample("000900000", jpg=first[kept[0]]["jpg"])
    copy_b = sample("000900001", jpg=first[kept[1]]["jpg"], txt=b"another caption")
    fresh = sample("000900002")
    extra = write_tar(tmp_path / "extra" / "00003.tar", [copy_a, fresh, copy_b])
    return [*shards, extra]


@pytest.mark.parametrize("buckets", [1, 3])
def test_groups_with_the_dedup_index_keep_what_one_filter_keeps(buckets, copies, tmp_path):
    whole = filter_shards(copies, tmp_path / "whole", FILTER)
    groups = [copies[:1], copies[1:2], copies[2:]]
    kept, counts = by_groups(groups, tmp_path / "groups", buckets=buckets)
    assert kept == kept_keys(tmp_path / "whole")
    assert counts["dropped"] == whole["dropped"]
    assert "000900002" in kept and not {"000900000", "000900001"} & set(kept)
    assert counts["across_groups"] >= 2  # the two copies in group 2 of group 0's images
    assert counts["later_copies"] == whole["dropped"]["duplicate"]
    # the bucket tables read together are one table: one row per later copy
    table = pd.read_parquet(tmp_path / "groups" / "duplicates.parquet")
    assert len(table) == counts["later_copies"] + counts["repeated_keys"]
    assert set(table.key) >= {"000900000", "000900001"}
    # without the index each group only sees its own duplicates
    kept_alone, _ = by_groups(groups, tmp_path / "alone", dedup=False)
    assert {"000900000", "000900001"} <= set(kept_alone)


def test_a_copy_is_kept_when_the_first_copy_loses_on_its_caption(tmp_path):
    nsfw = sample("000000000", json=json.dumps({"NSFW": "NSFW", "similarity": 0.4}).encode())
    good = sample("000000001", jpg=nsfw[1]["jpg"])
    groups = [
        [write_tar(tmp_path / "a" / "00000.tar", [nsfw])],
        [write_tar(tmp_path / "b" / "00001.tar", [good, sample("000000002", jpg=nsfw[1]["jpg"])])],
    ]
    kept, counts = by_groups(groups, tmp_path)
    assert kept == ["000000001"]  # the first candidate copy; its own later copy is dropped
    assert counts["dropped"]["nsfw"] == 1 and counts["dropped"]["duplicate"] == 1
    assert counts["across_groups"] == 0 and counts["candidates"] == 2


def test_a_table_made_from_other_shards_or_no_table_is_an_input_error(copies, tmp_path):
    hash_group(copies[:2], FILTER, tmp_path / "h.parquet")
    find_later_copies([tmp_path / "h.parquet"], 0, tmp_path / "d.parquet")
    with pytest.raises(InputError, match="made without shard .*00002.tar") as err:
        read_later_copies([tmp_path / "d.parquet"], copies[2:])
    assert err.value.path == str(tmp_path / "d.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a dedup table"):
        read_later_copies([tmp_path / "junk.parquet"], copies)
    with pytest.raises(InputError, match="not a dedup table"):
        read_later_copies([tmp_path / "h.parquet"], copies)
    with pytest.raises(InputError, match="not a hash table"):
        find_later_copies([tmp_path / "d.parquet"], 0, tmp_path / "e.parquet")
    with pytest.raises(InputError, match="no such shard file"):
        hash_group([tmp_path / "missing.tar"], FILTER, tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "e.parquet").exists()


def test_buckets_must_all_be_there_and_agree(copies, flip_manifest, tmp_path):
    settings = {**FILTER, "dedup_buckets": 2}
    hash_group(copies[:2], settings, tmp_path / "h0.parquet")
    hash_group(copies[2:], settings, tmp_path / "h1.parquet")
    hashes = [tmp_path / "h0.parquet", tmp_path / "h1.parquet"]
    with pytest.raises(InputError, match="bucket 2, but the hash tables have 2") as err:
        find_later_copies(hashes, 2, tmp_path / "d2.parquet")
    assert err.value.path == "--bucket"
    tables = [tmp_path / f"d{b}.parquet" for b in range(2)]
    for b, out in enumerate(tables):
        find_later_copies(hashes, b, out)
    with pytest.raises(InputError, match="bucket 1 of 2 not given"):
        read_later_copies(tables[:1], copies[:2])
    with pytest.raises(InputError, match="bucket 0's table, as is"):
        read_later_copies([tables[0], tables[0], tables[1]], copies[:2])
    later = read_later_copies(tables, copies)  # the demo's planted copies and the extra two
    assert sorted(v.key for v in later.values()) == sorted(
        [*flip_manifest["planted"]["duplicate"], "000900000", "000900001"]
    )
    hash_group(copies[2:], FILTER, tmp_path / "h1.parquet")  # 1 bucket: another run's table
    with pytest.raises(InputError, match="made with 1 buckets but .*h0.parquet with 2") as err:
        find_later_copies(hashes, 0, tmp_path / "x.parquet")
    assert err.value.path == str(tmp_path / "h1.parquet")


def test_the_bucket_jobs_name_what_the_one_job_named(tmp_path):
    """Random tables with planted image copies, keys repeated across groups and rows without
    an image: every bucket count gives the later copies, reasons, first copies and counts of
    the dedup as one job over every group (its algorithm as it was, kept in the benchmark)."""
    data = bench.synthetic(30_000, 5, samples_per_shard=500, copies=0.2, repeated_keys=0.05,
                           non_candidates=0.2, seed=7)  # fmt: skip
    (tmp_path / "old").mkdir()
    old_counts = bench.old_find_later_copies(
        bench.write_old_tables(data, tmp_path / "old"), tmp_path / "old.parquet"
    )
    assert old_counts["later_copies"] > 1000 and old_counts["repeated_keys"] > 100
    expected = pd.read_parquet(tmp_path / "old.parquet")
    for buckets in (1, 4):
        folder = tmp_path / f"b{buckets}"
        folder.mkdir()
        hashes = bench.write_new_tables(data, folder, buckets)
        counts: dict = {}
        for b in range(buckets):
            out = folder / "duplicates.parquet" / f"bucket{b}.parquet"
            for name, n in find_later_copies(hashes, b, out).items():
                counts[name] = counts.get(name, 0) + n
        got = pd.read_parquet(folder / "duplicates.parquet", columns=list(expected.columns))
        by = list(expected.columns)
        got, want = (t.sort_values(by).reset_index(drop=True) for t in (got, expected))
        assert got.equals(want)
        assert counts == old_counts


def test_the_rules_read_every_bucket(tmp_path):
    track = {"datasets": {"laion": {"shards": "/d/{0..9}.tar"}}, "filter": {"dedup_buckets": 3}}
    tables = duplicate_tables(track, "laion")
    assert tables == [DUPLICATES.format(dataset="laion", bucket=b) for b in range(3)]
    assert tables[2] == "results/flip/laion/dedup/duplicates.parquet/bucket2.parquet"
    assert duplicate_tables({**track, "filter": {}}, "laion") == tables[:1]  # the default


def test_a_shard_changed_since_the_hash_stage_is_an_input_error(tmp_path):
    a, b = sample("000000001"), sample("000000002")
    shard = write_tar(tmp_path / "in" / "00000.tar", [a, b, sample("000000003", jpg=a[1]["jpg"])])
    hash_group([shard], FILTER, tmp_path / "h.parquet")
    find_later_copies([tmp_path / "h.parquet"], 0, tmp_path / "d.parquet")
    later = read_later_copies([tmp_path / "d.parquet"], [shard])
    assert list(later) == [(str(shard), 2)] and later[(str(shard), 2)].key == "000000003"
    write_tar(shard, [b, a, sample("000000003", jpg=a[1]["jpg"]), sample("000000004")])
    assert filter_shards([shard], tmp_path / "ok", FILTER, later_copies=later)["kept"] == 3
    write_tar(shard, [b, a, sample("000000004"), sample("000000003", jpg=a[1]["jpg"])])
    with pytest.raises(InputError, match="sample 2 has key 000000004 but the dedup index"):
        filter_shards([shard], tmp_path / "out", FILTER, later_copies=later)


def test_the_image_hash_is_of_the_tars_bytes(flip_demo, tmp_path):
    """img2dataset's sha256 column hashes the downloaded file, before resizing: the hash
    stage hashes the bytes the tar holds (on the demo, which stores what it hashed, the two
    agree)."""
    shard = list_shards(flip_demo / "shards")[0]
    hash_group([shard], FILTER, tmp_path / "demo.parquet")
    table = pq.read_table(tmp_path / "demo.parquet").to_pandas()
    listed = pd.read_parquet(shard.with_suffix(".parquet")).set_index("key")["sha256"]
    candidates = table[table.sha256.notna()]
    assert len(candidates) > 80
    assert all(row.sha256.hex() == listed[row.key] for row in candidates.itertuples())
    images = dict(tar_samples(shard))
    assert all(hashlib.sha256(images[k]["jpg"]).digest() == h
               for k, h in zip(candidates.key, candidates.sha256, strict=True))  # fmt: skip
    resized = shard_files(tmp_path / "resized", 0)  # a parquet whose sha256 is of another file
    write_tar(resized["tar"], [sample("000000001"), sample("000000002")])
    rows = [{"key": k, "status": "success", "sha256": hashlib.sha256(k.encode()).hexdigest()}
            for k in ("000000001", "000000002")]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), resized["parquet"])
    hash_group([resized["tar"]], FILTER, tmp_path / "resized.parquet")
    got = pq.read_table(tmp_path / "resized.parquet")["sha256"].to_pylist()
    assert got == [hashlib.sha256(sample(k)[1]["jpg"]).digest() for k in ("000000001", "000000002")]


def test_cli_hash_dedup_filter(copies, tmp_path):
    def stage(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "scripts/flip.py"), *args]
        return subprocess.run(command, capture_output=True, text=True)

    settings = json.dumps({"dedup_buckets": 2})
    groups = [[str(p) for p in copies[:3]], [str(copies[3])]]
    for g, shards in enumerate(groups):
        result = stage("hash", "--shards", *shards, "--out", str(tmp_path / f"h{g}.parquet"),
                       "--settings", settings)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    hashes = [str(tmp_path / f"h{g}.parquet") for g in range(2)]
    across = 0
    for b in range(2):
        out = str(tmp_path / f"d{b}.parquet")
        result = stage("dedup", "--hashes", *hashes, "--bucket", str(b), "--out", out)
        assert result.returncode == 0, result.stderr[-2000:]
        across += int(result.stderr.split(" across groups")[0].rsplit("(", 1)[1])
    assert across == 2
    out = tmp_path / "g1"
    tables = [str(tmp_path / f"d{b}.parquet") for b in range(2)]
    result = stage("filter", "--shards", *groups[1], "--out", str(out),
                   "--duplicates", *tables, "--settings", settings)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert kept_keys(out) == ["000900002"]
    result = stage("filter", "--shards", *groups[1], "--out", str(tmp_path / "g1b"),
                   "--duplicates", str(tmp_path / "h0.parquet"))  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'h0.parquet'}: ")
    result = stage("dedup", "--hashes", *hashes, "--bucket", "2", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: --bucket: bucket 2, but the hash tables have 2"
    )


@pytest.mark.parametrize("buckets", [1, 2])
def test_repeated_keys_across_groups_drop_what_one_filter_drops(buckets, tmp_path):
    """Keys repeated within a shard, across shards of a group and across groups: the groups
    with the dedup index keep and drop exactly what one filter over every shard does, and no
    hash table lists a key twice."""
    bad_first = sample("000000001", json=b"{not json")  # its key still counts as read
    a = [bad_first, sample("000000002"), sample("000000003")]
    reused = sample("000000001")  # group 1: a key group 0 had; its image is new
    copy = sample("000000009", jpg=reused[1]["jpg"])  # the same image under a new key
    b = [reused, sample("000000002"), copy, sample("000000004"), sample("000000004")]
    c = [sample("000000004"), sample("000000003"), sample("000000005")]
    shards = [write_tar(tmp_path / "in" / f"0000{i}.tar", s) for i, s in enumerate([a, b, c])]
    whole = filter_shards(shards, tmp_path / "whole", FILTER)
    kept, counts = by_groups([shards[:1], shards[1:]], tmp_path / "groups", buckets=buckets)
    assert kept == kept_keys(tmp_path / "whole")
    assert kept == ["000000002", "000000003", "000000009", "000000004", "000000005"]
    assert counts["dropped"] == whole["dropped"]
    assert {r: n for r, n in whole["dropped"].items() if n} == {
        "duplicate_key": 5, "bad_metadata": 1,
    }  # fmt: skip
    assert counts["repeated_keys"] == 3  # 000000001, 000000002 in b; 000000003 in c
    for g in range(2):
        keys = pq.read_table(tmp_path / "groups" / f"hash{g}.parquet")["key"].to_pylist()
        assert len(keys) == len(set(keys))


def test_a_hash_table_of_an_older_format_is_an_input_error(tmp_path):
    shard = write_tar(tmp_path / "00000.tar", [sample()])
    hash_group([shard], FILTER, tmp_path / "h.parquet")
    table = pq.read_table(tmp_path / "h.parquet")
    meta = {k: v for k, v in table.schema.metadata.items() if k != FORMAT_META}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "old.parquet")
    with pytest.raises(InputError, match="older format"):
        find_later_copies([tmp_path / "old.parquet"], 0, tmp_path / "d.parquet")
