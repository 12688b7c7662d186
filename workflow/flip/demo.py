"""Seeded synthetic image-caption shards in the img2dataset layout, with planted bad samples.

Each image is a large coloured shape on a textured neutral background (``background``, a
colour that is never a class colour, at a random brightness); its caption names the class
words together ("a photo of a red circle", "a large red circle on the left of a gray
background", ...: templates and size / position words vary, the colour always belongs to the
shape), so the classes of the ImageFolder val set (colour x shape, ``classnames.txt``) are
described by captions and zero-shot accuracy on them means something. Val images are drawn
the same way from a held-out seed; the linear probe's train split (``train/<class>/``, ImageNet's
folder layout, ``<class>_<j>.jpg`` as ImageNet's ``n01440764_10026.JPEG``) from a third seed
stream of its own, so adding it changed neither the val images nor the shards.

``bad_per_reason`` samples per drop reason of ``PLANTED`` carry exactly one defect each
(an NSFW tag, a low similarity, a tiny or extreme-aspect image, an empty, missing or
non-UTF-8 caption, an exact copy of an earlier image, a truncated JPEG, a JPEG header that
claims 30000 x 30000 px); ``manifest.json`` lists their keys per reason, so the filter's
counts can be checked exactly. The manifest is written last and marks completion.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image, ImageDraw

from workflow.common.atomic import atomic_path, write_json, write_text
from workflow.common.config import schema_dataclass
from workflow.common.errors import InputError
from workflow.flip.layout import parquet_row, sample_key, shard_files, write_parquet

#: The drop reasons the demo plants, one defect per bad sample (see workflow/flip/filter.py).
PLANTED = (
    "nsfw", "low_similarity", "too_small", "extreme_aspect", "empty_caption", "missing_caption",
    "bad_caption", "duplicate", "undecodable", "decompression_bomb",
)  # fmt: skip
RGB = {
    "red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 210),
    "yellow": (230, 210, 40), "purple": (140, 50, 170), "orange": (240, 140, 30),
    "white": (235, 235, 235), "black": (25, 25, 25), "gray": (128, 128, 128),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring", "star", "hexagon")
#: Caption templates: {c} colour, {s} shape, {b} background, {z} size, {p} position words.
TEMPLATES = (
    "a photo of a {c} {s}",
    "a {z} {c} {s} on a {b} background",
    "a {c} {s} {p}",
    "{c} {s}, {z}, textured {b} backdrop",
    "a drawing of a {z} {c} {s} {p}",
    "a {c} {s}",
)
#: Relative shape radius (of the image side) and the size words of its lower / upper half.
RADIUS = (0.26, 0.42)
SIZE_WORDS = ("small", "large")
GOOD_SIMILARITY = (0.31, 0.45)  # above LAION's 0.3
LOW_SIMILARITY = (0.05, 0.25)
TINY_SIZE = 16  # below the filter's default min_size 32
EXTREME_SIZE = (160, 40)  # aspect 4 > the filter's default max_aspect 3; min side 40 >= 32
BOMB_SIZE = 30000  # 9e8 px claimed by the header > the filter's default max_pixels 1e8
#: The filter settings under which each planted sample fails exactly one check (the defaults).
FILTER_ASSUMES = {
    "min_similarity": 0.3, "min_size": 32, "max_aspect": 3.0, "max_pixels": 100_000_000,
    "nsfw_tags": ["NSFW"], "min_caption_words": 1,
}  # fmt: skip


def _check(self) -> None:
    """What the schema cannot say: names known, room for the planted samples."""
    problems = []
    unknown = [c for c in self.colors if c not in RGB] + [s for s in self.shapes if s not in SHAPES]
    if unknown:
        problems.append(f"unknown colours/shapes {unknown} (known: {list(RGB)}, {SHAPES})")
    if self.background not in RGB:
        problems.append(f"unknown background {self.background!r} (known: {list(RGB)})")
    if self.background in self.colors:
        problems.append(f"background {self.background!r} is also a class colour")
    total = self.shards * self.samples_per_shard
    if total < len(PLANTED) * self.bad_per_reason + 2:
        problems.append(f"{total} samples leave no room for the planted bad ones")
    if self.train_per_class < 2:
        problems.append(
            f"train_per_class {self.train_per_class}: the probe's sweep holds out part of "
            "every class, so it needs 2 or more"
        )
    if self.image_size < 32:
        problems.append(f"image_size {self.image_size} is below the filter's min_size 32")
    if problems:
        raise InputError("flip_demo settings", "; ".join(problems))


#: write_demo's settings: config/schema/flip.yaml $defs/flip_demo, their one source.
DemoSettings = schema_dataclass("DemoSettings", "flip_demo", __name__, check=_check)


def class_names(s: DemoSettings) -> list[tuple[str, str]]:
    """(folder, class name) of every colour x shape class, in folder (sorted) order."""
    pairs = [(f"{c}_{sh}", f"{c} {sh}") for c in s.colors for sh in s.shapes]
    return sorted(pairs)


def draw(
    rng: np.random.Generator, color: str, shape: str, background: str, size: tuple[int, int]
) -> tuple[Image.Image, dict[str, str]]:
    """A ``shape`` in ``color`` at a random place and scale on a noisy ``background`` of
    random brightness; with the size and position words of the shape (``z``, ``p``)."""
    w, h = size
    base = np.array(RGB[background], dtype=float) * float(rng.uniform(0.6, 1.4))
    noise = rng.normal(0, 14, (h, w, 1)) + rng.normal(0, 5, (h, w, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    side = min(w, h)
    relative = float(rng.uniform(*RADIUS))
    r = side * relative
    cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
    fill = tuple(int(v) for v in np.clip(np.array(RGB[color]) + rng.normal(0, 10, 3), 0, 255))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "ring":  # a circle's outline: the same colour mass as no other shape
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(int(r / 3), 2))
    elif shape == "star":  # five points, the inner radius 0.4 of the outer
        radii = [r if k % 2 == 0 else 0.4 * r for k in range(10)]
        angles = [k * np.pi / 5 for k in range(10)]
        corners = zip(radii, angles, strict=True)
        d.polygon([(cx + q * np.sin(a), cy - q * np.cos(a)) for q, a in corners], fill=fill)
    elif shape == "hexagon":
        d.regular_polygon((cx, cy, r), 6, fill=fill)
    else:  # cross
        t = r / 3
        d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    dx, dy = (cx - w / 2) / w, (cy - h / 2) / h
    if max(abs(dx), abs(dy)) < 0.1:
        where = "in the centre"
    elif abs(dx) >= abs(dy):
        where = "on the left" if dx < 0 else "on the right"
    else:
        where = "at the top" if dy < 0 else "at the bottom"
    z = SIZE_WORDS[int(relative >= sum(RADIUS) / 2)]
    return img, {"z": z, "p": where}


def jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def bomb_header(data: bytes, side: int = BOMB_SIZE) -> bytes:
    """A valid small JPEG whose SOF header claims ``side`` x ``side`` px: decoding it would
    allocate gigabytes, reading its header costs nothing."""
    at = data.find(b"\xff\xc0")
    if at < 0:
        raise ValueError("no baseline SOF0 marker")
    dims = side.to_bytes(2, "big") * 2  # height, width
    return data[: at + 5] + dims + data[at + 9 :]


def _draw_sample(rng: np.random.Generator, s: DemoSettings) -> tuple[str, str, str, int]:
    color, shape = str(rng.choice(s.colors)), str(rng.choice(s.shapes))
    return color, shape, s.background, int(rng.integers(len(TEMPLATES)))


def _plan(s: DemoSettings, rng: np.random.Generator) -> dict[int, str]:
    """Global sample index -> planted reason; index 0 stays good so every duplicate has an
    earlier good original."""
    total = s.shards * s.samples_per_shard
    chosen = rng.permutation(np.arange(1, total))[: len(PLANTED) * s.bad_per_reason]
    return {int(i): PLANTED[k // s.bad_per_reason] for k, i in enumerate(chosen)}


def write_val(root: Path, s: DemoSettings) -> int:
    """``val/<class>/*.jpg`` and ``classnames.txt`` (drawn from the held-out seed)."""
    n = _write_images(root / "val", s, s.val_per_class, 2, lambda folder, j: f"{j:04d}.jpg")
    write_text(root / "classnames.txt", "".join(f"{name}\n" for _, name in class_names(s)))
    return n


def write_train(root: Path, s: DemoSettings) -> int:
    """``train/<class>/<class>_<j>.jpg``: the linear probe's train split, drawn like the val
    set from a seed stream of its own (``[seed, 3]``), so the val images do not depend on it."""
    return _write_images(
        root / "train", s, s.train_per_class, 3, lambda folder, j: f"{folder}_{j:04d}.jpg"
    )


def _write_images(
    out: Path, s: DemoSettings, per_class: int, stream: int, name: Callable[[str, int], str]
) -> int:
    """``per_class`` images of every class into ``out/<class>/``, from seed stream
    ``[seed, stream]``; returns how many."""
    rng = np.random.default_rng([s.seed, stream])
    n = 0
    for folder, _ in class_names(s):
        color, shape = folder.split("_")
        for j in range(per_class):
            img, _ = draw(rng, color, shape, s.background, (s.image_size, s.image_size))
            with atomic_path(out / folder / name(folder, j)) as tmp:
                tmp.write_bytes(jpeg(img, s.jpeg_quality))
            n += 1
    return n


def write_demo(root: str | Path, settings: DemoSettings) -> dict[str, Any]:
    """Write the shards, the val and train sets and ``manifest.json`` (last)."""
    s, root = settings, Path(root)
    s.check()
    rng = np.random.default_rng([s.seed, 0])
    plan = _plan(s, np.random.default_rng([s.seed, 1]))
    planted: dict[str, list[str]] = {reason: [] for reason in PLANTED}
    good_images: list[bytes] = []
    seen: set[str] = set()
    side = s.image_size
    for shard in range(s.shards):
        files = shard_files(root / "shards", shard)
        rows: list[dict] = []
        started = time.monotonic()
        with atomic_path(files["tar"]) as tmp:
            writer = wds.TarWriter(str(tmp), encoder=False, mtime=0)
            for i in range(s.samples_per_shard):
                g = shard * s.samples_per_shard + i
                key = sample_key(shard, i, s.samples_per_shard)
                reason = plan.get(g)
                color, shape, background, t = _draw_sample(rng, s)
                size = {"too_small": (TINY_SIZE, TINY_SIZE), "extreme_aspect": EXTREME_SIZE}
                img, words = draw(rng, color, shape, background, size.get(reason, (side, side)))
                data = jpeg(img, s.jpeg_quality)
                while reason != "duplicate" and hashlib.sha256(data).hexdigest() in seen:
                    img, words = draw(rng, color, shape, background, img.size)  # never in practice
                    data = jpeg(img, s.jpeg_quality)
                caption = TEMPLATES[t].format(c=color, s=shape, b=background, **words)
                nsfw = str(rng.choice(["UNLIKELY", "UNLIKELY", "UNLIKELY", "UNSURE"]))
                similarity = float(rng.uniform(*GOOD_SIMILARITY))
                if reason == "duplicate":
                    data = good_images[int(rng.integers(len(good_images)))]
                elif reason == "undecodable":
                    data = data[: len(data) // 2]
                elif reason == "decompression_bomb":
                    data = bomb_header(data)
                elif reason == "nsfw":
                    nsfw = "NSFW"
                elif reason == "low_similarity":
                    similarity = float(rng.uniform(*LOW_SIMILARITY))
                elif reason == "empty_caption":
                    caption = " "
                text = caption.encode()
                if reason == "bad_caption":
                    text = caption.replace(" ", " \xff", 1).encode("latin-1")  # not UTF-8
                    caption = text.decode("utf-8", errors="replace")
                if reason is None:
                    good_images.append(data)
                else:
                    planted[reason].append(key)
                sha = hashlib.sha256(data).hexdigest()
                seen.add(sha)
                meta = {
                    "url": f"https://demo.invalid/{key}.jpg", "caption": caption, "key": key,
                    "status": "success", "width": img.width, "height": img.height,
                    "original_width": img.width, "original_height": img.height,
                    "sha256": sha, "NSFW": nsfw, "similarity": round(similarity, 6),
                    "LICENSE": "?",
                }  # fmt: skip
                sample = {"__key__": key, "jpg": data, "json": json.dumps(meta).encode()}
                if reason != "missing_caption":
                    sample["txt"] = text
                writer.write(sample)
                rows.append(parquet_row(meta))
            writer.close()
        with atomic_path(files["parquet"]) as tmp:
            write_parquet(tmp, rows)
        n = len(rows)
        write_json(
            files["stats"],
            {
                "count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
                "duration": round(time.monotonic() - started, 3),
                "status_dict": {"success": n},
            },
        )  # fmt: skip
    val_images = write_val(root, s)
    train_images = write_train(root, s)
    total = s.shards * s.samples_per_shard
    bad = sum(len(v) for v in planted.values())
    manifest = {
        "dataset": "synthetic FLIP demo (img2dataset webdataset layout)",
        "seed": s.seed,
        "shards": [f"shards/{shard_files(Path(), k)['tar'].name}" for k in range(s.shards)],
        "samples": total,
        "good": total - bad,
        "planted": planted,
        "counts": {reason: len(keys) for reason, keys in planted.items()},
        "classes": [name for _, name in class_names(s)],
        "val_images": val_images,
        "train_images": train_images,
        "filter_assumes": FILTER_ASSUMES,
        "settings": asdict(s),
    }
    write_json(root / "manifest.json", manifest)
    return manifest
