"""The filter's rules: its settings and source profiles, and the per-sample checks that raise
``Drop`` with the first reason of ``REASONS`` that holds (each reason's meaning and order:
workflow/flip/filter.py).

Kept apart from the stage that writes shards: the dedup hash jobs (workflow/flip/dedup_hash.py)
apply the very same key and text checks, and the Snakemake rules read ``DEFAULTS``, without
importing the writer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workflow.common.config import schema_defaults
from workflow.common.errors import InputError
from workflow.common.images import BadImage, decode_image
from workflow.common.images import image_size as header_size
from workflow.common.paths import leaves
from workflow.common.values import is_number
from workflow.flip.layout import CAPTION_EXT, IMAGE_EXT, META_EXT, is_text
from workflow.flip.shards import printable

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
