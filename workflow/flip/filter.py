"""Shard filtering for FLIP pre-training: drop unusable or unwanted image-caption samples and
write new shards in the same img2dataset layout, with a count per drop reason.

Each sample is checked in the fixed order of ``REASONS`` and dropped for the first that holds,
so every dropped sample counts under exactly one reason:

* ``bad_key``: the key (member name up to the first dot) is empty, not UTF-8, absolute or
  climbs out with ``..`` (a member the filter would write, and a tool would unpack, outside
  the shard's folder) (damage);
* ``duplicate_key``: a sample with the same key came earlier (in ``shards`` order, in the same
  shard or another, and, with the dedup index, in an earlier filter group); img2dataset keys
  are unique over a dataset, so a repeat is a broken or twice-run writer (damage). The first
  copy is the one checked further (and kept if it passes); members of one key that repeat an
  extension (``KEY.jpg`` twice in a row: one sample written twice) start a new sample;
* ``bad_metadata``: ``KEY.json`` missing or not a JSON object (damage);
* ``missing_caption``: no ``KEY.txt`` (damage; kept apart from an empty caption, which is a
  LAION quality filter, because a missing member points at a broken writer);
* ``bad_caption``: the caption is not UTF-8 (damage);
* ``empty_caption``: fewer than ``min_caption_words`` words;
* ``nsfw``: the ``NSFW`` field is one of ``nsfw_tags`` (profiles laion400m, laion5b), or
  LAION-5B's ``punsafe`` is ``max_punsafe`` or more (laion5b);
* ``watermark``: LAION-5B's ``pwatermark`` is ``max_pwatermark`` or more (laion5b);
* ``low_similarity``: the profile's CLIP similarity field below ``min_similarity`` (default:
  the source's own threshold, ``PROFILES``); a missing score, one that is no number (a
  string, a boolean) and a NaN or infinite one fail their check (this one and the two
  above): the sample's pairing or safety is unknown, not damaged;
* ``decompression_bomb``: the image header claims more than ``max_pixels`` pixels; checked
  from the header, before any decoding (damage);
* ``too_small`` / ``extreme_aspect``: the image's smaller side below ``min_size`` / longer
  over shorter side above ``max_aspect``; sizes come from the image header, not the JSON,
  since img2dataset may have resized the image;
* ``undecodable``: no ``KEY.jpg``, or PIL cannot verify and fully load it (truncated or
  corrupt; damage);
* ``duplicate``: the sha256 of the image bytes equals that of a sample kept earlier (in
  ``shards`` order, over all of them, and, with the dedup index of workflow/flip/dedup.py,
  over every earlier filter group); checked last, so the first good copy is the one kept.

Sources differ in what their metadata hold (``PROFILES``, one per dataset): a rule whose field
the source lacks is not checked, and ``counts.json`` (``unchecked``) and the log say so.

"Damage" reasons follow ``on_bad_sample``: ``skip`` counts them, ``fail`` stops with a
BadSample naming the shard and the key. A whole damaged file (missing, not a tar, truncated)
is an InputError naming it, and so is a tar that disagrees with img2dataset's files beside
it (workflow/flip/shards.py): fewer or more samples than ``_stats.json``'s ``successes``, or other
keys than the parquet's ``success`` rows (a tar cut short at a member boundary and
re-terminated reads as a good tar; only these tell). A shard without them is read as it is,
with one warning per run. Each output shard's ``.parquet`` keeps every column of its
samples' input rows (img2dataset's parquet beside the input shard, else ``KEY.json``), with
the tar's key and status ``success``. Outputs (``00000.tar``, ``.parquet``, ``_stats.json`` ...,
``dropped.parquet`` with key / shard / reason / detail, and ``counts.json`` last) are written
under temporary names and renamed only when every input was read: a failed run leaves none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from workflow.common.atomic import write_json
from workflow.common.config import schema_defaults
from workflow.common.errors import BadSample, InputError
from workflow.common.images import BadImage, decode_image
from workflow.common.images import image_size as header_size
from workflow.common.paths import leaves
from workflow.common.values import is_number
from workflow.flip.layout import (
    CAPTION_EXT,
    IMAGE_EXT,
    META_EXT,
    PARQUET_COLUMNS,
    SHARD_RE,
    is_text,
    parquet_row,
    parquet_schema,
    shard_files,
)
from workflow.flip.shards import printable, read_rows, read_samples, require_shards

log = logging.getLogger("lsai.flip.filter")

REASONS = (
    "bad_key", "duplicate_key", "bad_metadata", "missing_caption", "bad_caption",
    "empty_caption", "nsfw", "watermark", "low_similarity", "decompression_bomb", "too_small",
    "extreme_aspect", "undecodable", "duplicate",
)  # fmt: skip
#: Reasons that mean a damaged sample (subject to on_bad_sample) rather than an unwanted one.
DAMAGE = frozenset({"bad_key", "duplicate_key", "bad_metadata", "missing_caption",
                    "bad_caption", "decompression_bomb", "undecodable"})  # fmt: skip
#: The schema's defaults of ``flip.filter`` (config/schema/flip.yaml $defs/flip_filter).
DEFAULTS: dict[str, Any] = schema_defaults("flip_filter")


@dataclass(frozen=True)
class Profile:
    """Which metadata fields one source's shards carry, and so which checks apply."""

    similarity: str | None  # the CLIP image-text similarity field; None: the source has none
    min_similarity: float | None  # the source's own threshold on it (min_similarity: null)
    nsfw_tag: bool  # LAION's NSFW tag field (UNLIKELY / UNSURE / NSFW)
    limits: tuple[tuple[str, str, str], ...] = ()  # (field, setting, reason): drop at >= setting
    unchecked: tuple[tuple[str, str], ...] = ()  # (reason, why) of the rules left out


#: LAION-400M and -5B: CLIP ViT-B/32 similarity, released at >= 0.3 and (English) >= 0.28;
#: LAION-5B adds punsafe and pwatermark (its detectors' probabilities). CC3M / CC12M: no
#: similarity or NSFW field. DataComp: clip_b32_similarity_score (its fixed-threshold
#: baseline keeps >= 0.25; the best one, L/14 top 30%, is relative to the whole pool).
PROFILES: dict[str, Profile] = {
    "laion400m": Profile(
        "similarity", 0.3, True,
        unchecked=(("watermark", "LAION-400M carries no watermark score"),),
    ),
    "laion5b": Profile(
        "similarity", 0.28, True,
        (("punsafe", "max_punsafe", "nsfw"), ("pwatermark", "max_pwatermark", "watermark")),
    ),
    "cc": Profile(None, None, False, unchecked=(
        ("nsfw", "CC3M / CC12M carry no NSFW tag"),
        ("watermark", "CC3M / CC12M carry no watermark score"),
        ("low_similarity", "CC3M / CC12M carry no CLIP similarity"),
    )),
    "datacomp": Profile("clip_b32_similarity_score", 0.25, False, unchecked=(
        ("nsfw", "DataComp carries no NSFW tag (its pool was NSFW-filtered upstream)"),
        ("watermark", "DataComp carries no watermark score"),
    )),
}  # fmt: skip


def filter_settings(settings: Mapping[str, Any], profile: str = "laion400m") -> dict[str, Any]:
    """The settings a run uses: the defaults, ``settings``, the profile's name and, where
    ``min_similarity`` is null, the profile's own threshold."""
    if profile not in PROFILES:
        raise InputError("--profile", f"unknown profile {profile!r} ({', '.join(PROFILES)})")
    s = {**DEFAULTS, **dict(settings), "profile": profile}
    if s["min_similarity"] is None:
        s["min_similarity"] = PROFILES[profile].min_similarity
    return s


class Drop(Exception):
    """One sample fails one check."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def image_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height from the image header alone (the shared decoder's check); a header
    claiming more than ``max_pixels`` is a decompression bomb, found before any decoding."""
    try:
        return header_size(data, limit=max_pixels)
    except BadImage as err:
        raise Drop(err.reason, err.problem) from None


def decodes(data: bytes, max_pixels: int) -> None:
    """The whole image decodes (a truncated JPEG passes the header check)."""
    try:
        decode_image(data, mode=None, limit=max_pixels)
    except BadImage as err:
        raise Drop(err.reason, err.problem) from None


def check_text(sample: dict[str, bytes], s: dict[str, Any]) -> tuple[dict, str]:
    """(meta, caption) of a sample whose metadata and caption pass; raises ``Drop`` with the
    first of the reasons before the image's that holds. ``s`` comes from filter_settings."""
    try:
        meta = json.loads(sample[META_EXT])
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except KeyError:
        raise Drop("bad_metadata", f"no .{META_EXT} member") from None
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deep
        raise Drop("bad_metadata", f"unreadable .{META_EXT}: {err}") from None
    if CAPTION_EXT not in sample:
        raise Drop("missing_caption", f"no .{CAPTION_EXT} member")
    try:
        caption = sample[CAPTION_EXT].decode("utf-8")
    except UnicodeDecodeError as err:
        raise Drop("bad_caption", f"caption is not UTF-8: {err}") from None
    words = len(caption.split())
    if words < s["min_caption_words"]:
        raise Drop("empty_caption", f"{words} words < {s['min_caption_words']}")
    profile = PROFILES[s["profile"]]
    if profile.nsfw_tag and meta.get("NSFW") in s["nsfw_tags"]:
        raise Drop("nsfw", f"NSFW tag {meta.get('NSFW')}")
    for field, setting, reason in profile.limits:
        value = meta.get(field)
        if not is_number(value) or value >= s[setting]:
            raise Drop(reason, f"{field} {str(value)[:40]} >= {s[setting]}")
    if profile.similarity is not None:
        value = meta.get(profile.similarity)
        if not is_number(value) or value < s["min_similarity"]:
            shown = f"{profile.similarity} {str(value)[:40]}"
            raise Drop("low_similarity", f"{shown} < {s['min_similarity']}")
    return meta, caption


def check_image(data: bytes | None, s: dict[str, Any]) -> None:
    """Raises ``Drop`` with the first image reason that holds. Each depends on the image
    bytes alone, so copies of one image pass or fail together (workflow/flip/dedup.py)."""
    if data is None:
        raise Drop("undecodable", f"no .{IMAGE_EXT} member")
    w, h = image_size(data, s["max_pixels"])
    if min(w, h) < s["min_size"]:
        raise Drop("too_small", f"{w}x{h} px, min side < {s['min_size']}")
    if max(w, h) / min(w, h) > s["max_aspect"]:
        raise Drop("extreme_aspect", f"{w}x{h} px, aspect > {s['max_aspect']}")
    decodes(data, s["max_pixels"])


def check_key_name(key: str) -> None:
    """Raises ``Drop`` for a key that is no text or a path out of the shard."""
    if not key.rpartition("/")[2] or not is_text(key):
        raise Drop("bad_key", f"key '{printable(key)}' is empty or not UTF-8")
    if leaves(key):
        raise Drop("bad_key", f"key '{printable(key)}' is a path out of the shard")


def check_key(key: str, shard: str, seen: dict[str, str], earlier: str | None) -> None:
    """Raises ``Drop`` for a key that is no text or was read before: in ``seen`` (key -> its
    shard, over this run's shards so far; the key is added) or, as ``earlier`` says (the
    dedup index), in an earlier filter group."""
    check_key_name(key)
    if key in seen:
        raise Drop("duplicate_key", f"key repeats a sample of {seen[key]}")
    seen[key] = shard
    if earlier:
        raise Drop("duplicate_key", f"key repeats {earlier}")


def check_sample(
    sample: dict[str, bytes], s: dict[str, Any], kept: Mapping[str, str], earlier: str | None = None
) -> tuple:
    """(meta, caption, sha256) of a sample to keep; raises ``Drop`` with the first reason of
    ``REASONS`` that holds. ``kept`` maps the sha256 of every image kept so far to where it
    is; ``earlier`` names this sample's first copy when dedup found one in an earlier group."""
    meta, caption = check_text(sample, s)
    data = sample.get(IMAGE_EXT)
    check_image(data, s)
    sha = hashlib.sha256(data).hexdigest()
    first = kept.get(sha) or earlier
    if first:
        raise Drop("duplicate", f"same image (sha256 {sha[:16]}...) as {first}")
    return meta, caption, sha


#: A kept sample's input row: (its shard's parquet rows, the row's index), else its KEY.json.
InputRow = tuple[pa.Table, int] | dict


def output_rows(rows: list[InputRow], keys: list[str]) -> pa.Table:
    """The output parquet of one shard: each sample's input row with every column (a shard's
    parquet row as it is typed there; a KEY.json's layout fields as the layout types them and
    its other fields as arrow infers them), the tar's key and status ``success`` (the row
    describes the tar's sample, whatever its input said). Columns whose types disagree
    between input shards become text."""
    pieces: list[pa.Table] = []
    run: list = []
    for row in [*rows, None]:  # consecutive rows of one source are taken at once
        same = bool(run) and row is not None and type(row) is type(run[0]) and (
            isinstance(row, dict) or row[0] is run[0][0]
        )  # fmt: skip
        if run and not same:
            if isinstance(run[0], dict):
                pieces.append(_json_rows(run))
            else:
                pieces.append(run[0][0].take(pa.array([i for _, i in run], pa.int64())))
            run = []
        if row is not None:
            run.append(row)
    table = _concat(pieces) if pieces else parquet_schema().empty_table()
    for name, values in (("key", keys), ("status", ["success"] * len(keys))):
        column = pa.array(values, pa.string())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.append_column(name, column)
    return table


def _json_rows(metas: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist([parquet_row(m) for m in metas], schema=parquet_schema())
    extra = list(dict.fromkeys(k for m in metas for k in m if k not in PARQUET_COLUMNS))
    for name in extra:
        values = [m.get(name) for m in metas]
        plain = [v if v is None or isinstance(v, str | int | float) else json.dumps(v)
                 for v in values]  # fmt: skip
        try:
            column = pa.array(plain)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            column = _text(values)
        if not is_text(name):
            continue
        table = table.append_column(name, column)
    return table


def _text(values: list) -> pa.Array:
    """Values as text: strings as they are (when UTF-8), anything else as JSON."""
    return pa.array([None if v is None else v if is_text(v) else json.dumps(v, default=str)
                     for v in values], pa.string())  # fmt: skip


def _concat(tables: list[pa.Table]) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    types: dict[str, set] = {}
    for t in tables:
        for field in t.schema:
            if not pa.types.is_null(field.type):
                types.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, seen in types.items() if len(seen) > 1}
    fixed = []
    for t in tables:
        for name in mixed & set(t.column_names):
            i = t.column_names.index(name)
            t = t.set_column(i, name, _text(t.column(i).to_pylist()))
        fixed.append(t)
    return pa.concat_tables(fixed, promote_options="permissive")


class _Output:
    """Output shards of ``shard_size`` samples under temporary names in ``out_dir``;
    ``commit`` renames them all, ``discard`` removes them."""

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        self.out_dir, self.shard_size = out_dir, shard_size
        self.tmp = out_dir / f".filter-{os.getpid()}-{time.monotonic_ns()}"
        self.tmp.mkdir(parents=True)
        self.shard, self.writer, self.started = -1, None, 0.0
        self.rows: list[InputRow] = []
        self.keys: list[str] = []
        self.written: list[str] = []

    def _close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        files = shard_files(self.tmp, self.shard)
        pq.write_table(output_rows(self.rows, self.keys), files["parquet"])
        n = len(self.rows)
        stats = {
            "count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
            "duration": round(time.monotonic() - self.started, 3),
            "status_dict": {"success": n},
        }  # fmt: skip
        files["stats"].write_text(json.dumps(stats, indent=2) + "\n")
        self.written += [p.name for p in files.values()]
        self.writer, self.rows, self.keys = None, [], []

    def write(self, key: str, sample: dict[str, bytes], row: InputRow) -> None:
        if self.writer is None or len(self.rows) >= self.shard_size:
            self._close()
            self.shard += 1
            self.started = time.monotonic()
            path = shard_files(self.tmp, self.shard)["tar"]
            import webdataset as wds  # here: it imports torch, which the hash and dedup jobs
            # (and the rules, which read this module's DEFAULTS) do not need

            self.writer = wds.TarWriter(str(path), encoder=False, mtime=0)
        self.writer.write({"__key__": key, **sample})
        self.rows.append(row)
        self.keys.append(key)

    def commit(self, dropped: list[dict], counts: dict) -> None:
        self._close()
        with open(self.tmp / "dropped.parquet", "wb") as fh:
            columns = ("key", "shard", "reason", "detail")
            table = pa.table({c: pa.array([d[c] for d in dropped], pa.string()) for c in columns})
            pq.write_table(table, fh)
        for old in self.out_dir.iterdir():  # stale shards of an earlier, larger run
            if SHARD_RE.match(old.name) and old.name not in self.written:
                old.unlink()
        for name in [*self.written, "dropped.parquet"]:
            os.replace(self.tmp / name, self.out_dir / name)
        self.tmp.rmdir()
        write_json(self.out_dir / "counts.json", counts)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for p in self.tmp.iterdir():
            p.unlink()
        self.tmp.rmdir()


def filter_shards(
    shards: list[Path],
    out_dir: Path,
    settings: Mapping[str, Any],
    policy: str = "skip",
    later_copies: Mapping[tuple[str, int], tuple[str, str, str]] | None = None,
    profile: str = "laion400m",
) -> dict[str, Any]:
    """Filter ``shards`` (in order) into ``out_dir`` with the rules of ``profile``; return
    what ``counts.json`` holds: ``samples``, ``kept``, ``dropped`` per reason (every reason,
    zeros included), ``shards`` (the same per input shard), ``output_shards``, ``profile``,
    ``unchecked`` (the rules the profile leaves out, and why) and ``settings``.

    Duplicates (images and keys) are found within ``shards``; ``later_copies`` ((shard,
    position in it) -> (``duplicate`` or ``duplicate_key``, where the first copy is, the
    sample's key), from workflow/flip/dedup.py) adds those whose first copy is in an earlier
    group.
    """
    s = filter_settings(settings, profile)
    if policy not in ("skip", "fail"):
        raise InputError("--on-bad-sample", f"unknown policy {policy!r} (skip or fail)")
    require_shards(shards)
    unchecked = dict(PROFILES[profile].unchecked)
    for reason, why in unchecked.items():
        log.info("profile %s: %s not checked (%s)", profile, reason, why)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept: dict[str, str] = {}
    seen: dict[str, str] = {}
    later_copies = later_copies or {}
    dropped: list[dict] = []
    total = {r: 0 for r in REASONS}
    per_shard: dict[str, dict] = {}
    out = _Output(out_dir, int(s["shard_size"]))
    try:
        for path in map(Path, shards):
            counts = {"samples": 0, "kept": 0, **{r: 0 for r in REASONS}}
            rows = read_rows(path)
            samples = read_samples(path)
            for position, (key, sample) in enumerate(
                tqdm(samples, desc=path.name, mininterval=5, leave=False)
            ):
                counts["samples"] += 1
                reason, first = _verdict(later_copies, path, position, key)
                try:
                    check_key(key, path.name, seen, first if reason == "duplicate_key" else None)
                    meta, _, sha = check_sample(
                        sample, s, kept, first if reason == "duplicate" else None
                    )
                except Drop as drop:
                    if drop.reason in DAMAGE and policy == "fail":
                        raise BadSample(path, printable(f"sample {key}: {drop}")) from None
                    counts[drop.reason] += 1
                    total[drop.reason] += 1
                    dropped.append(
                        {"key": printable(key), "shard": path.name, "reason": drop.reason,
                         "detail": printable(drop.detail)}
                    )  # fmt: skip
                    if len(dropped) <= 20:
                        log.warning("dropped %s", printable(f"{path.name} {key}: {drop}"))
                    continue
                kept[sha] = f"{path.name}/{key}"
                counts["kept"] += 1
                out.write(key, sample, meta if rows is None else (rows, position))
            per_shard[str(path)] = counts
            log.info("%s: kept %d of %d", path, counts["kept"], counts["samples"])
        result = {
            "samples": sum(c["samples"] for c in per_shard.values()),
            "kept": sum(c["kept"] for c in per_shard.values()),
            "dropped": total,
            "shards": per_shard,
            "output_shards": out.shard + 1,
            "profile": profile,
            "unchecked": unchecked,
            "settings": s,
        }
        out.commit(dropped, result)
    except BaseException:
        out.discard()
        raise
    return result


def _verdict(later_copies: Mapping[tuple[str, int], tuple[str, str, str]], path: Path,
             position: int, key: str) -> tuple[str | None, str | None]:  # fmt: skip
    """(reason, first copy) the dedup index gives the sample at ``position``; its key must
    be the one the hash stage read there."""
    verdict = later_copies.get((str(path), position))
    if verdict is None:
        return None, None
    reason, first, listed = verdict
    if listed != key:
        raise InputError(path, f"sample {position} has key {printable(key)} but the dedup "
                         f"index lists {printable(listed)} there (the shard changed since the "
                         "hash stage: rerun it)")  # fmt: skip
    return reason, first
