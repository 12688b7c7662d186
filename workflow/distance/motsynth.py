"""Read MOTSynth-style annotations (one COCO-style JSON per sequence) into object rows.

File-level damage (unreadable or malformed JSON, missing sections, no intrinsics) always stops
with an ``InputError``; damage confined to one object or frame is a ``BadSample`` and follows
the ``on_bad_sample`` policy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from workflow.common.errors import BadSample, InputError, Skips
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


def _intrinsics(info: Any, path: Path) -> dict[str, float]:
    if not isinstance(info, dict):
        raise InputError(path, "'info' must be an object with the camera intrinsics")
    values = {}
    for key in ("fx", "fy", "cx", "cy"):
        v = info.get(key)
        if not isinstance(v, int | float) or not math.isfinite(v) or (key[0] == "f" and v <= 0):
            raise InputError(path, f"info.{key} missing or invalid: {v!r}")
        values[key] = float(v)
    return values


def _object_row(ann: dict[str, Any], image: dict[str, Any], definition: str) -> dict[str, Any]:
    """Validate one annotation; problems raise ``BadSample`` (path filled in by the caller)."""
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox)
    ):
        raise BadSample("", f"bbox must be 4 finite numbers, got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    img_w, img_h = float(image["width"]), float(image["height"])
    tol = 1.0
    if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > img_w + tol or y + h > img_h + tol:
        raise BadSample("", f"box {bbox} outside the {image['width']}x{image['height']} image")
    kp3d = ann.get("keypoints_3d")
    if kp3d is None:
        raise BadSample("", "missing keypoints_3d")
    arr = np.asarray(kp3d, dtype=np.float64)
    if arr.size != N_JOINTS * 4:
        raise BadSample("", f"keypoints_3d has {arr.size} values, expected {N_JOINTS}x4")
    arr = arr.reshape(N_JOINTS, 4)
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


def read_sequence(
    ann_path: Path,
    root: Path,
    definition: str,
    policy: str,
    frame_stride: int = 1,
    skips: Skips | None = None,
) -> list[dict[str, Any]]:
    """Object rows of one sequence file, every ``frame_stride``-th frame."""
    doc = load_json(ann_path)
    if not isinstance(doc, dict):
        raise InputError(ann_path, "expected a JSON object with images, annotations, info")
    for key in ("images", "annotations", "info"):
        if key not in doc:
            raise InputError(ann_path, f"missing '{key}'")
    if not isinstance(doc["images"], list) or not isinstance(doc["annotations"], list):
        raise InputError(ann_path, "'images' and 'annotations' must be lists")
    intr = _intrinsics(doc["info"], ann_path)
    sequence = str(doc["info"].get("seq_name", ann_path.stem))
    skips = skips if skips is not None else Skips()

    def bad(err: BadSample, item: str, path: Path = ann_path) -> None:
        err = BadSample(path, err.problem)
        if policy == "fail":
            raise InputError(err.path, f"{item}: {err.problem}")
        skips.add(err, item)

    images: dict[Any, dict[str, Any]] = {}
    for image in doc["images"]:
        try:
            frame_n = int(image["frame_n"])
            images[image["id"]] = {
                **image,
                "frame_n": frame_n,
                "width": int(image["width"]),
                "height": int(image["height"]),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(ann_path, f"image entry {image!r:.80} lacks {err}") from None
    kept = {k: im for k, im in images.items() if im["frame_n"] % frame_stride == 0}
    present: dict[Any, bool] = {}
    rows = []
    for ann in doc["annotations"]:
        item = f"annotation {ann.get('id', '?')}"
        image_id = ann.get("image_id")
        if image_id not in images:
            bad(BadSample("", f"image_id {image_id!r} not in images"), item)
            continue
        image = kept.get(image_id)
        if image is None:
            continue  # frame not sampled by the stride
        frame_path = root / image["file_name"]
        if image["id"] not in present:
            present[image["id"]] = frame_path.is_file()
            if not present[image["id"]]:
                bad(
                    BadSample("", f"frame file not found (image {image['id']} of {ann_path})"),
                    f"image {image['id']}",
                    frame_path,
                )
        if not present[image["id"]]:
            continue
        try:
            geometry = _object_row(ann, image, definition)
        except BadSample as err:
            bad(err, item)
            continue
        rows.append(
            {
                "sequence": sequence,
                "frame": image["frame_n"],
                "image_id": image["id"],
                "file_name": image["file_name"],
                "ann_id": ann.get("id"),
                "ped_id": ann.get("ped_id", -1),
                **geometry,
                **intr,
            }
        )
    return rows
