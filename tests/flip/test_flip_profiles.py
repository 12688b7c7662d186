"""Filter profiles per source: shards written here in each source's img2dataset layout (its own
parquet columns and KEY.json fields), filtered with its profile; what is kept and why is
written out by hand from how each sample was made."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.conftest import ROOT
from workflow.common.config import ConfigError, deep_merge, validate_config
from workflow.flip.dedup_buckets import find_later_copies
from workflow.flip.dedup_hash import hash_group
from workflow.flip.dedup_verdicts import read_later_copies
from workflow.flip.filter import filter_shards
from workflow.flip.sources import dataset_profile

#: img2dataset's own columns, in its order, then each source's saved ones.
IMG2DATASET = {
    "url": pa.string(), "caption": pa.string(), "key": pa.string(), "status": pa.string(),
    "error_message": pa.string(), "width": pa.int64(), "height": pa.int64(),
    "original_width": pa.int64(), "original_height": pa.int64(), "exif": pa.string(),
    "sha256": pa.string(),
}  # fmt: skip
EXTRA = {
    "laion400m": {"NSFW": pa.string(), "similarity": pa.float64(), "LICENSE": pa.string()},
    "laion5b": {
        "similarity": pa.float64(),
        "hash": pa.int64(),
        "punsafe": pa.float64(),
        "pwatermark": pa.float64(),
        "LANGUAGE": pa.string(),
    },  # fmt: skip
    "cc": {},
    "datacomp": {
        "uid": pa.string(),
        "clip_b32_similarity_score": pa.float64(),
        "clip_l14_similarity_score": pa.float64(),
    },  # fmt: skip
}
SETTINGS = {"shard_size": 1000}


def image(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    img = Image.new("RGB", size, (seed * 37 % 256, seed * 11 % 256, 90))
    img.putpixel((seed % size[0], 0), (0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_source(folder: Path, shard: int, source: str, samples: list[dict],
                 parquet: bool = True) -> Path:  # fmt: skip
    """An img2dataset shard of ``source``: ``samples`` are (key, caption, fields[, size]), a
    failed download after every second one (a parquet row, no tar member); KEY.json holds
    the same fields as the parquet row, as img2dataset writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema({**IMG2DATASET, **EXTRA[source]})
    rows, members = [], []
    for i, s in enumerate(samples):
        data = image(int(s["key"]), s.get("size", (64, 64)))
        w, h = s.get("size", (64, 64))
        meta = {"url": f"http://x/{s['key']}.jpg", "caption": s["caption"], "key": s["key"],
                "status": "success", "error_message": None, "width": w, "height": h,
                "original_width": w * 4, "original_height": h * 4,
                "exif": json.dumps({"Image Make": "Canon"}), "sha256": "0" * 64,
                **s["fields"]}  # fmt: skip
        rows.append({c: meta.get(c) for c in schema.names})
        members += [(f"{s['key']}.jpg", data), (f"{s['key']}.txt", s["caption"].encode()),
                    (f"{s['key']}.json", json.dumps(meta, indent=4).encode())]  # fmt: skip
        if i % 2:
            rows.append({"key": f"9{s['key'][1:]}", "status": "failed_to_download",
                         "error_message": "HTTP Error 404", "url": "http://gone"})  # fmt: skip
    tar = folder / f"{shard:05d}.tar"
    with tarfile.open(tar, "w") as out:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    if parquet:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tar.with_suffix(".parquet"))
    stats = {"count": len(rows), "successes": len(samples), "failed_to_download": len(rows) -
             len(samples), "failed_to_resize": 0, "duration": 1.5, "start_time": 1.0,
             "end_time": 2.5, "status_dict": {"success": len(samples)}}  # fmt: skip
    (folder / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4))
    return tar


def kept_keys(folder: Path) -> list[str]:
    keys = []
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as t:
            keys += [m.name.split(".")[0] for m in t if m.name.endswith(".jpg")]
    return keys


def reasons(counts: dict) -> dict[str, int]:
    return {r: n for r, n in counts["dropped"].items() if n}


def cc_samples(first: int = 0, n: int = 6) -> list[dict]:
    """CC3M-style: no similarity, no NSFW tag; sample first+4 is tiny, first+5 captionless."""
    samples = [{"key": f"{first + i:09d}", "caption": f"a photo of thing {i}", "fields": {}}
               for i in range(n)]  # fmt: skip
    if n > 5:
        samples[4]["size"] = (16, 16)
        samples[5]["caption"] = "   "
    return samples


def test_cc_shards_skip_the_similarity_rule_and_say_so(tmp_path, caplog):
    shard = write_source(tmp_path / "cc", 0, "cc", cc_samples())
    with caplog.at_level(logging.INFO, logger="lsai.flip.filter"):
        counts = filter_shards([shard], tmp_path / "out", SETTINGS, profile="cc")
    assert kept_keys(tmp_path / "out") == [f"{i:09d}" for i in range(4)]
    assert reasons(counts) == {"too_small": 1, "empty_caption": 1}  # the other rules hold
    assert set(counts["unchecked"]) == {"nsfw", "watermark", "low_similarity"}
    assert counts["profile"] == "cc" and counts["settings"]["min_similarity"] is None
    said = [r.getMessage() for r in caplog.records]
    assert any("low_similarity not checked" in m and "no CLIP similarity" in m for m in said)
    saved = json.loads((tmp_path / "out" / "counts.json").read_text())
    assert saved["unchecked"] == counts["unchecked"]
    # read as LAION-400M, the missing similarity drops every sample whatever the threshold
    counts = filter_shards([shard], tmp_path / "laion", {**SETTINGS, "min_similarity": -1},
                           profile="laion400m")  # fmt: skip
    assert counts["kept"] == 0 and counts["dropped"]["low_similarity"] == 5  # tiny one too


def laion5b_samples() -> list[dict]:
    def s(key: int, **fields: object) -> dict:
        base = {"similarity": 0.31, "hash": key * 7, "punsafe": 0.01, "pwatermark": 0.1,
                "LANGUAGE": "en"}  # fmt: skip
        return {"key": f"{key:09d}", "caption": f"a picture number {key}",
                "fields": {**base, **fields}}  # fmt: skip

    return [
        s(0),  # kept
        s(1, punsafe=0.5),  # nsfw: at the threshold
        s(2, punsafe=0.49),  # kept
        s(3, pwatermark=0.7),  # watermark
        s(4, punsafe=None),  # nsfw: safety unknown
        s(5, similarity=0.285),  # kept: LAION-5B's English threshold is 0.28
        s(6, similarity=0.27),  # low_similarity
        s(7, pwatermark=float("nan")),  # watermark: no finite number
    ]


def test_laion5b_drops_unsafe_and_watermarked_samples(tmp_path):
    shard = write_source(tmp_path / "l5", 0, "laion5b", laion5b_samples())
    counts = filter_shards([shard], tmp_path / "out", SETTINGS, profile="laion5b")
    assert kept_keys(tmp_path / "out") == ["000000000", "000000002", "000000005"]
    assert reasons(counts) == {"nsfw": 2, "watermark": 2, "low_similarity": 1}
    assert counts["unchecked"] == {} and counts["settings"]["min_similarity"] == 0.28
    dropped = pq.read_table(tmp_path / "out" / "dropped.parquet").to_pylist()
    detail = {d["key"]: d["detail"] for d in dropped}
    assert detail["000000001"] == "punsafe 0.5 >= 0.5"
    assert detail["000000004"] == "punsafe None >= 0.5"
    assert detail["000000006"] == "similarity 0.27 < 0.28"
    # the thresholds are settings: above 1 keeps every score; LAION-400M's 0.3 drops 0.285
    loose = {**SETTINGS, "max_punsafe": 1.1, "max_pwatermark": 1.1, "min_similarity": 0.3}
    counts = filter_shards([shard], tmp_path / "loose", loose, profile="laion5b")
    assert reasons(counts) == {"nsfw": 1, "watermark": 1, "low_similarity": 2}
    # read as LAION-400M, punsafe and pwatermark are not looked at
    counts = filter_shards([shard], tmp_path / "l4", SETTINGS, profile="laion400m")
    assert reasons(counts) == {"low_similarity": 2}
    assert counts["unchecked"] == {"watermark": "LAION-400M carries no watermark score"}


def test_datacomp_reads_its_b32_score(tmp_path):
    def s(key: int, **fields: object) -> dict:
        return {"key": f"{key:09d}", "caption": f"an image {key}",
                "fields": {"uid": f"{key:032x}", **fields}}  # fmt: skip

    samples = [
        s(0, clip_b32_similarity_score=0.26, clip_l14_similarity_score=0.2),  # kept
        s(1, clip_b32_similarity_score=0.24, clip_l14_similarity_score=0.4),  # low
        s(2, clip_l14_similarity_score=0.4),  # low: no B/32 score (download_upstream.py's)
        s(3, clip_b32_similarity_score=0.25, NSFW="NSFW"),  # kept: the threshold; no tag rule
    ]
    shard = write_source(tmp_path / "dc", 0, "datacomp", samples)
    counts = filter_shards([shard], tmp_path / "out", SETTINGS, profile="datacomp")
    assert kept_keys(tmp_path / "out") == ["000000000", "000000003"]
    assert reasons(counts) == {"low_similarity": 2}
    assert set(counts["unchecked"]) == {"nsfw", "watermark"}
    dropped = pq.read_table(tmp_path / "out" / "dropped.parquet").to_pylist()
    assert dropped[1]["detail"] == "clip_b32_similarity_score None < 0.25"


SOURCES = {
    "laion400m": [{"key": f"{i:09d}", "caption": f"picture {i}",
                   "fields": {"NSFW": "UNLIKELY", "similarity": 0.35, "LICENSE": "?"}}
                  for i in range(4)],
    "laion5b": laion5b_samples(),
    "cc": cc_samples(),
    "datacomp": [{"key": f"{i:09d}", "caption": f"image {i}",
                  "fields": {"uid": f"{i:032x}", "clip_b32_similarity_score": 0.3,
                             "clip_l14_similarity_score": 0.3}} for i in range(4)],
}  # fmt: skip


@pytest.mark.parametrize("source", list(SOURCES))
def test_the_output_parquet_keeps_every_input_column(source, tmp_path):
    shard = write_source(tmp_path / "in", 0, source, SOURCES[source])
    counts = filter_shards([shard], tmp_path / "out", {"shard_size": 2}, profile=source)
    assert counts["kept"] >= 3 and counts["output_shards"] >= 2
    source_rows = {r["key"]: r for r in pq.read_table(shard.with_suffix(".parquet")).to_pylist()}
    columns = list(pq.read_schema(shard.with_suffix(".parquet")).names)
    out_rows = []
    for part in sorted((tmp_path / "out").glob("*.parquet")):
        if part.name != "dropped.parquet":
            table = pq.read_table(part)
            assert table.column_names == columns  # the input's columns, in its order
            assert table.schema.equals(pq.read_schema(shard.with_suffix(".parquet")))
            out_rows += table.to_pylist()
    assert [r["key"] for r in out_rows] == kept_keys(tmp_path / "out")
    for row in out_rows:  # exif, error_message, punsafe, uid ... as the input had them
        assert row == source_rows[row["key"]]


def test_an_output_shard_joins_rows_of_shards_with_and_without_parquet(tmp_path):
    with_parquet = write_source(tmp_path / "in", 0, "laion5b", laion5b_samples()[:1])
    odd = {"similarity": 0.4, "punsafe": 0.0, "pwatermark": 0.0, "hash": "not a number",
           "aesthetic": 6.5, "tags": ["a", "b"]}  # fmt: skip
    bare = [{"key": "000000100", "caption": "a bare one", "fields": odd}]
    without = write_source(tmp_path / "in", 1, "laion5b", bare, parquet=False)
    counts = filter_shards([with_parquet, without], tmp_path / "out", SETTINGS, profile="laion5b")
    assert counts["kept"] == 2
    table = pq.read_table(tmp_path / "out" / "00000.parquet")
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == ["000000000", "000000100"]
    assert rows[0]["punsafe"] == 0.01 and rows[0]["exif"] == json.dumps({"Image Make": "Canon"})
    assert rows[1]["aesthetic"] == 6.5 and rows[1]["aesthetic"] is not None
    assert rows[1]["tags"] == json.dumps(["a", "b"])  # nested JSON as text
    assert rows[0]["hash"] == "0" and rows[1]["hash"] == "not a number"  # int and str: text
    assert rows[1]["status"] == "success" and rows[1]["error_message"] is None


def test_dedup_finds_copies_across_cc_groups(tmp_path):
    """The hash stage applies the profile's rules: CC samples are candidates under cc (under
    laion400m none would be), so a copy in a later group is found."""
    a = cc_samples(0, 4)
    b = cc_samples(10, 4)
    b[1]["key"] = "000000002"  # repeats a key of group 0
    first = write_source(tmp_path / "g0", 0, "cc", a)
    later = write_source(tmp_path / "g1", 1, "cc", b)
    with tarfile.open(first) as t:
        copied = t.extractfile("000000001.jpg").read()
    with tarfile.open(later) as t:  # sample 10 gets sample 1's image
        members = [(m, t.extractfile(m).read()) for m in t]
    with tarfile.open(later, "w") as t:
        for m, data in members:
            data = copied if m.name == "000000010.jpg" else data
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    settings = {**SETTINGS, "dedup_buckets": 2}
    for g, shard in enumerate([first, later]):
        assert hash_group([shard], settings, tmp_path / f"h{g}.parquet", "cc") == 4
    hashes = [tmp_path / "h0.parquet", tmp_path / "h1.parquet"]
    tables = [tmp_path / f"d{b}.parquet" for b in range(2)]
    for bucket, out in enumerate(tables):
        find_later_copies(hashes, bucket, out)
    verdicts = read_later_copies(tables, [later])
    assert sorted((p, v.reason, v.first) for (_, p), v in verdicts.items()) == [
        (0, "duplicate", "00000.tar/000000001"), (1, "duplicate_key", "00000.tar/000000002"),
    ]  # fmt: skip
    counts = filter_shards([later], tmp_path / "out", settings, "skip", verdicts, "cc")
    assert kept_keys(tmp_path / "out") == ["000000012", "000000013"]
    assert reasons(counts) == {"duplicate": 1, "duplicate_key": 1}


def test_cli_filter_and_hash_take_the_profile(tmp_path):
    shard = write_source(tmp_path / "cc", 0, "cc", cc_samples())
    script = [sys.executable, str(ROOT / "scripts/flip.py")]
    result = subprocess.run([*script, "filter", "--shards", str(shard), "--out",
                             str(tmp_path / "out"), "--profile", "cc"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kept 4 of 6 samples" in result.stderr
    assert "not checked (profile cc): nsfw, watermark, low_similarity" in result.stderr
    result = subprocess.run([*script, "hash", "--shards", str(shard), "--out",
                             str(tmp_path / "h.parquet"), "--profile", "cc"],
                            capture_output=True, text=True)  # fmt: skip
    assert (
        result.returncode == 0 and "hash: 5 candidate samples" in result.stderr
    )  # tiny: an image rule
    result = subprocess.run([*script, "filter", "--shards", str(shard), "--out",
                             str(tmp_path / "x"), "--profile", "laion9b"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "invalid choice: 'laion9b'" in result.stderr


def test_the_config_names_a_profile_per_dataset():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    overlay = {"flip": {"datasets": {
        "cc3m": {"shards": "/d/cc3m/{00000..00331}.tar", "val": "/v", "profile": "cc"},
        "laion2b": {"shards": "/d/l/{00000..00009}.tar", "val": "/v", "profile": "laion5b"},
    }}}  # fmt: skip
    checked = validate_config(deep_merge(config, overlay))
    assert dataset_profile(checked["flip"], "cc3m") == "cc"
    assert dataset_profile(checked["flip"], "laion2b") == "laion5b"
    assert dataset_profile(checked["flip"], "demo") == "laion400m"  # the default
    assert checked["flip"]["filter"]["min_similarity"] is None  # each profile's own
    bad = {"flip": {"datasets": {"x": {"shards": "/d/{0..1}.tar", "profile": "laion9b"}}}}
    with pytest.raises(ConfigError, match="profile"):
        validate_config(deep_merge(config, bad))
