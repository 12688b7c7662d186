"""Duplicates across filter groups: hash per group, one dedup over all, filter per group keeps
exactly what one filter over every shard keeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT
from tests.flip.conftest import FILTER, sample, tar_samples, write_tar
from workflow.common.errors import InputError
from workflow.flip.dedup import FORMAT_META, find_later_copies, hash_group, read_later_copies
from workflow.flip.filter import filter_shards
from workflow.flip.layout import list_shards


def kept_keys(folder: Path) -> list[str]:
    return [k for shard in list_shards(folder) for k, _ in tar_samples(shard)]


def by_groups(groups: list[list[Path]], tmp: Path, dedup: bool = True) -> tuple[list, dict]:
    """Hash, dedup and filter ``groups`` as the rules do: (kept keys, dropped per reason)."""
    hashes = [tmp / f"hash{g}.parquet" for g in range(len(groups))]
    for shards, out in zip(groups, hashes, strict=True):
        hash_group(shards, FILTER, out)
    counts = find_later_copies(hashes, tmp / "duplicates.parquet")
    kept, dropped = [], {}
    for g, shards in enumerate(groups):
        later = read_later_copies(tmp / "duplicates.parquet", shards) if dedup else None
        result = filter_shards(shards, tmp / f"group{g}", FILTER, "skip", later)
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


def test_groups_with_the_dedup_index_keep_what_one_filter_keeps(copies, tmp_path):
    whole = filter_shards(copies, tmp_path / "whole", FILTER)
    groups = [copies[:1], copies[1:2], copies[2:]]
    kept, counts = by_groups(groups, tmp_path / "groups")
    assert kept == kept_keys(tmp_path / "whole")
    assert counts["dropped"] == whole["dropped"]
    assert "000900002" in kept and not {"000900000", "000900001"} & set(kept)
    assert counts["across_groups"] >= 2  # the two copies in group 2 of group 0's images
    assert counts["later_copies"] == whole["dropped"]["duplicate"]
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
    find_later_copies([tmp_path / "h.parquet"], tmp_path / "d.parquet")
    with pytest.raises(InputError, match="made without shard .*00002.tar") as err:
        read_later_copies(tmp_path / "d.parquet", copies[2:])
    assert err.value.path == str(tmp_path / "d.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a dedup table"):
        read_later_copies(tmp_path / "junk.parquet", copies)
    with pytest.raises(InputError, match="not a hash table"):
        find_later_copies([tmp_path / "d.parquet"], tmp_path / "e.parquet")
    with pytest.raises(InputError, match="no such shard file"):
        hash_group([tmp_path / "missing.tar"], FILTER, tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "e.parquet").exists()


def test_cli_hash_dedup_filter(copies, tmp_path):
    def stage(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "scripts/flip.py"), *args]
        return subprocess.run(command, capture_output=True, text=True)

    groups = [[str(p) for p in copies[:3]], [str(copies[3])]]
    for g, shards in enumerate(groups):
        result = stage("hash", "--shards", *shards, "--out", str(tmp_path / f"h{g}.parquet"))
        assert result.returncode == 0, result.stderr[-2000:]
    hashes = [str(tmp_path / f"h{g}.parquet") for g in range(2)]
    result = stage("dedup", "--hashes", *hashes, "--out", str(tmp_path / "d.parquet"))
    assert result.returncode == 0 and "(2 across groups)" in result.stderr, result.stderr
    out = tmp_path / "g1"
    result = stage("filter", "--shards", *groups[1], "--out", str(out),
                   "--duplicates", str(tmp_path / "d.parquet"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert kept_keys(out) == ["000900002"]
    result = stage("filter", "--shards", *groups[1], "--out", str(tmp_path / "g1b"),
                   "--duplicates", str(tmp_path / "h0.parquet"))  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'h0.parquet'}: ")


def test_repeated_keys_across_groups_drop_what_one_filter_drops(tmp_path):
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
    kept, counts = by_groups([shards[:1], shards[1:]], tmp_path / "groups")
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
        find_later_copies([tmp_path / "old.parquet"], tmp_path / "d.parquet")
