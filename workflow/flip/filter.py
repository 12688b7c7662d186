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

This module runs the stage; the settings, profiles and checks are in
workflow/flip/filter_checks.py, the output shards in workflow/flip/filter_output.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from workflow.common.errors import BadSample, InputError
from workflow.flip.filter_checks import (
    DAMAGE,
    PROFILES,
    REASONS,
    Drop,
    check_key,
    check_sample,
    filter_settings,
)
from workflow.flip.filter_output import OutputShards
from workflow.flip.shards import printable, read_rows, read_samples, require_shards

log = logging.getLogger("lsai.flip.filter")


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
    out = OutputShards(out_dir, int(s["shard_size"]))
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
