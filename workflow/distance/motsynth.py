"""Read MOTSynth-style annotations (one COCO-style JSON per sequence) into object rows.

File-level damage (unreadable or malformed JSON, missing sections, no intrinsics, a bad
``seq_name``) always stops with an ``InputError``; damage confined to one object or frame (a
malformed ``images`` or ``annotations`` entry, a missing frame file, a duplicate) is a
``BadSample`` and follows the ``on_bad_sample`` policy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workflow.common.errors import BadSample, InputError, Skips, first_line
from workflow.common.paths import leaves
from workflow.common.values import is_number
from workflow.distance.joints import N_JOINTS, distance_from_keypoints

ROW_COLUMNS = (
    "sequence",
    "frame",
    "image_id",
    "file_name",
    "ann_id",
    "ped_id",
    "x",
    "y",
    "w",
    "h",
    "img_w",
    "img_h",
    "fx",
    "fy",
    "cx",
    "cy",
    "distance",
    "visibility",
    "occlusion",
)


MAX_INT64 = 2**63 - 1  # ids and frame numbers land in int64 Parquet columns
VISIBILITY_FLAGS = (0, 1, 2)  # COCO: not labelled, labelled but occluded, visible


def load_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"unreadable: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            path, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except (ValueError, RecursionError) as err:  # an over-long integer, absurd nesting
        raise InputError(path, f"malformed JSON: {first_line(err)}") from None


def as_int(v: Any, minimum: int = 0) -> int | None:
    """``v`` as an integer in [minimum, int64 max] (``3.0`` counts), else None."""
    if not is_number(v) or v != int(v):
        return None
    n = int(v)
    return n if minimum <= n <= MAX_INT64 else None


def _check_layout(doc: Any, path: Path) -> None:
    """The file's top-level structure: anything wrong here stops the stage."""
    if not isinstance(doc, dict):
        raise InputError(path, "expected a JSON object with images, annotations, info")
    for key in ("images", "annotations", "info"):
        if key not in doc:
            raise InputError(path, f"missing '{key}'")
    if not isinstance(doc["images"], list) or not isinstance(doc["annotations"], list):
        raise InputError(path, "'images' and 'annotations' must be lists")


def _intrinsics(info: Any, path: Path) -> dict[str, float]:
    if not isinstance(info, dict):
        raise InputError(path, "'info' must be an object with the camera intrinsics")
    values = {}
    for key in ("fx", "fy", "cx", "cy"):
        v = info.get(key)
        if not is_number(v) or (key[0] == "f" and v <= 0):
            raise InputError(path, f"info.{key} missing or invalid: {v!r:.60}")
        values[key] = float(v)
    return values


def _sequence_name(info: dict[str, Any], path: Path) -> str:
    """``info.seq_name`` (the file's stem when absent): the name every row carries."""
    name = info.get("seq_name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise InputError(path, f"info.seq_name must be a non-empty string, got {name!r:.60}")
    return name


@dataclass
class _Damage:
    """Routes one file's bad samples through ``on_bad_sample``, naming the file (or frame)."""

    path: Path
    policy: str
    skips: Skips

    def __call__(self, err: BadSample, item: str, path: Path | None = None) -> None:
        err = BadSample(path or self.path, err.problem)
        if self.policy == "fail":
            raise InputError(err.path, f"{item}: {err.problem}")
        self.skips.add(err, item)


def _file_name(name: Any) -> str:
    """A frame path inside the dataset root: an absolute path or ``..`` would read outside it."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise BadSample("", f"file_name must be a non-empty path, got {name!r:.60}")
    if leaves(name):
        raise BadSample("", f"file_name {name!r:.80} points outside the dataset root")
    return name


def _frame(entry: Any) -> dict[str, Any]:
    """Validate one ``images`` entry (a frame); problems raise ``BadSample``."""
    if not isinstance(entry, dict):
        raise BadSample("", f"image entry is not a JSON object: {entry!r:.60}")
    frame: dict[str, Any] = {}
    for key, minimum in (("id", 0), ("frame_n", 0), ("width", 1), ("height", 1)):
        frame[key] = as_int(entry.get(key), minimum)
        if frame[key] is None:
            raise BadSample(
                "", f"image {key} must be an integer >= {minimum}, got {entry.get(key)!r:.60}"
            )
    frame["file_name"] = _file_name(entry.get("file_name"))
    return frame


def _frames(entries: list[Any], damage: _Damage) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """Valid frames by image id, and the ids of frames dropped as bad (their objects go with
    them, uncounted). A repeated image id or frame number is a bad sample; the first is kept."""
    frames: dict[int, dict[str, Any]] = {}
    by_number: dict[int, int] = {}
    dropped: set[int] = set()
    for position, entry in enumerate(entries):
        image_id = as_int(entry.get("id")) if isinstance(entry, dict) else None
        item = f"image {image_id}" if image_id is not None else f"image entry #{position}"
        try:
            frame = _frame(entry)
            if frame["id"] in frames:
                raise BadSample("", f"duplicate image id {frame['id']} (the first is kept)")
            if frame["frame_n"] in by_number:
                other = by_number[frame["frame_n"]]
                raise BadSample("", f"frame_n {frame['frame_n']} is also image {other}'s")
        except BadSample as err:
            damage(err, item)
            if image_id is not None and image_id not in frames:
                dropped.add(image_id)
            continue
        frames[frame["id"]] = frame
        by_number[frame["frame_n"]] = frame["id"]
    return frames, dropped


@dataclass
class _FrameFiles:
    """Whether each sampled frame's file exists, checked once per frame: a missing one is a
    bad sample of that frame (its objects go with it, uncounted)."""

    root: Path
    damage: _Damage
    present: dict[int, bool] = field(default_factory=dict)

    def __call__(self, frame: dict[str, Any]) -> bool:
        image_id = frame["id"]
        if image_id not in self.present:
            path = self.root / frame["file_name"]
            self.present[image_id] = path.is_file()
            if not self.present[image_id]:
                problem = f"frame file not found (image {image_id} of {self.damage.path})"
                self.damage(BadSample(path, problem), f"image {image_id}", path)
        return self.present[image_id]


def _item(ann: Any, position: int) -> str:
    """How errors name an annotation: by its id, or by its position when the id is unusable."""
    ann_id = as_int(ann.get("id")) if isinstance(ann, dict) else None
    return f"annotation {ann_id}" if ann_id is not None else f"annotation #{position}"


def _references(ann: Any) -> tuple[int, int]:
    """The annotation's own id and its image's id; a malformed entry raises ``BadSample``."""
    if not isinstance(ann, dict):
        raise BadSample("", f"annotation is not a JSON object: {ann!r:.60}")
    ids = {key: as_int(ann.get(key)) for key in ("id", "image_id")}
    for key, value in ids.items():
        if value is None:
            raise BadSample("", f"{key} must be an integer >= 0, got {ann.get(key)!r:.60}")
    return ids["id"], ids["image_id"]


def _ped_id(ann: dict[str, Any]) -> int:
    """The pedestrian's track id within the sequence; -1 when the file gives none."""
    if ann.get("ped_id") is None:
        return -1
    ped_id = as_int(ann["ped_id"])
    if ped_id is None:
        raise BadSample("", f"ped_id must be an integer >= 0, got {ann['ped_id']!r:.60}")
    return ped_id


def _keypoints(kp3d: Any) -> np.ndarray:
    """``keypoints_3d`` as (joints, 4): camera-frame x, y, z (m) and a 0/1/2 visibility flag."""
    if kp3d is None:
        raise BadSample("", "missing keypoints_3d")
    expected = f"keypoints_3d must be {N_JOINTS}x4 finite numbers"
    if not isinstance(kp3d, list):
        raise BadSample("", f"{expected}, got {kp3d!r:.60}")
    if len(kp3d) != N_JOINTS * 4:
        raise BadSample("", f"{expected}, got {len(kp3d)} values")
    wrong = next((i for i, v in enumerate(kp3d) if not is_number(v)), None)
    if wrong is not None:
        raise BadSample("", f"{expected}, got {kp3d[wrong]!r:.30} at position {wrong}")
    arr = np.asarray(kp3d, dtype=np.float64).reshape(N_JOINTS, 4)
    flags = arr[:, 3]
    if not np.isin(flags, VISIBILITY_FLAGS).all():
        odd = sorted(set(flags[~np.isin(flags, VISIBILITY_FLAGS)].tolist()))
        raise BadSample("", f"keypoints_3d visibility flags must be 0, 1 or 2, got {odd[:3]}")
    return arr


def _object_row(ann: dict[str, Any], image: dict[str, Any], definition: str) -> dict[str, Any]:
    """Validate one annotation's geometry; problems raise ``BadSample`` (path filled in by the
    caller)."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(is_number, bbox)):
        raise BadSample("", f"bbox must be 4 finite numbers, got {bbox!r:.80}")
    x, y, w, h = (float(v) for v in bbox)
    img_w, img_h = float(image["width"]), float(image["height"])
    tol = 1.0
    if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > img_w + tol or y + h > img_h + tol:
        raise BadSample("", f"box {bbox} outside the {image['width']}x{image['height']} image")
    arr = _keypoints(ann.get("keypoints_3d"))
    distance = distance_from_keypoints(arr, definition)
    depth = distance_from_keypoints(arr, "depth")  # behind the camera is never valid
    if not (math.isfinite(distance) and distance > 0 and depth > 0):
        raise BadSample(
            "", f"non-positive distance ({distance:.3g} m, depth {depth:.3g} m) from keypoints_3d"
        )
    visibility = float((arr[:, 3] == 2).mean())
    return {
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "img_w": img_w,
        "img_h": img_h,
        "distance": distance,
        "visibility": visibility,
        "occlusion": 1.0 - visibility,
    }


@dataclass
class _Kept:
    """Ids and pedestrians of the rows kept so far: a repeated annotation id, or a second row
    for one pedestrian in one image (same ``image_id`` and ``ped_id``), is a duplicate."""

    ids: set[int] = field(default_factory=set)
    objects: dict[tuple[int, int], int] = field(default_factory=dict)

    def check(self, row: dict[str, Any]) -> None:
        if row["ann_id"] in self.ids:
            raise BadSample("", f"duplicate annotation id {row['ann_id']} (the first is kept)")
        first = self.objects.get((row["image_id"], row["ped_id"]))
        if row["ped_id"] >= 0 and first is not None:
            raise BadSample(
                "",
                f"duplicate object: ped_id {row['ped_id']} in image {row['image_id']} "
                f"is already annotation {first} (the first is kept)",
            )

    def add(self, row: dict[str, Any]) -> None:
        self.ids.add(row["ann_id"])
        self.objects[(row["image_id"], row["ped_id"])] = row["ann_id"]


@dataclass
class _Reader:
    """What one file's annotations are checked against: its frames and the stage's settings."""

    frames: dict[int, dict[str, Any]]
    dropped: set[int]
    frame_stride: int
    definition: str
    frame_ok: _FrameFiles

    def row(self, ann: Any) -> dict[str, Any] | None:
        """One annotation's row; None for objects of frames skipped by the stride or dropped."""
        ann_id, image_id = _references(ann)
        if image_id in self.dropped:
            return None
        frame = self.frames.get(image_id)
        if frame is None:
            raise BadSample("", f"image_id {image_id!r} not in images")
        if frame["frame_n"] % self.frame_stride or not self.frame_ok(frame):
            return None
        return {
            "frame": frame["frame_n"],
            "image_id": image_id,
            "file_name": frame["file_name"],
            "ann_id": ann_id,
            "ped_id": _ped_id(ann),
            **_object_row(ann, frame, self.definition),
        }


def read_sequence(
    ann_path: Path,
    root: Path,
    definition: str,
    policy: str,
    frame_stride: int = 1,
    skips: Skips | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The sequence name and the object rows of one sequence file, every ``frame_stride``-th
    frame.

    Duplicates among the rows read (a repeated annotation ``id``, or one pedestrian listed
    twice in one image) are bad samples: the first copy is kept and each later one is skipped
    and counted under ``skip``, or stops the stage under ``fail``.
    """
    doc = load_json(ann_path)
    _check_layout(doc, ann_path)
    intr = _intrinsics(doc["info"], ann_path)
    sequence = _sequence_name(doc["info"], ann_path)
    damage = _Damage(ann_path, policy, skips if skips is not None else Skips())
    frames, dropped = _frames(doc["images"], damage)
    reader = _Reader(frames, dropped, frame_stride, definition, _FrameFiles(root, damage))
    kept = _Kept()
    rows = []
    for position, ann in enumerate(doc["annotations"]):
        try:
            row = reader.row(ann)
            if row is None:
                continue
            kept.check(row)
        except BadSample as err:
            damage(err, _item(ann, position))
            continue
        kept.add(row)
        rows.append({"sequence": sequence, **row, **intr})
    return sequence, rows
