"""``distance_extract``: resized frames and object crops packed into one HDF5 file per split,
so training never decodes full-size JPEGs per step; plus the datasets that read it back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from workflow.common.atomic import atomic_path
from workflow.common.errors import BadSample, InputError, Skips
from workflow.common.images import BadImage, decode_image
from workflow.common.paths import leaves

log = logging.getLogger("lsai.distance.store")

OBJECT_FIELDS = ("distance", "visibility", "occlusion", "fx", "fy", "img_w", "img_h", "ped_id")
#: The index columns extract reads: numbers (finite; sizes positive) and the frame's names.
NUMBER_COLUMNS = ("frame", "ann_id", "x", "y", "w", "h", *OBJECT_FIELDS)
POSITIVE_COLUMNS = ("w", "h", "img_w", "img_h")
NAME_COLUMNS = ("sequence", "file_name")


def read_index(path: Path) -> pd.DataFrame:
    """A split table from the index stage, checked for what extract relies on."""
    try:
        table = pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except Exception as err:  # pyarrow raises several types for damaged files
        raise InputError(path, f"not a readable Parquet table: {err}") from None
    check_index(table, path)
    return table


def check_index(table: pd.DataFrame, path: Path) -> None:
    """Columns, types and values extract uses: a table from another version or a damaged one
    stops here with the column named, not deep in numpy."""
    missing = [c for c in (*NAME_COLUMNS, *NUMBER_COLUMNS) if c not in table.columns]
    if missing:
        raise InputError(path, f"index lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise InputError(path, "index has no rows")
    for column in NUMBER_COLUMNS:
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise InputError(path, f"index column {column} is not numeric ({values.dtype})")
        bad = ~np.isfinite(values.to_numpy(np.float64))
        if column in POSITIVE_COLUMNS:
            bad |= values.to_numpy(np.float64) <= 0
        if bad.any():
            raise InputError(path, f"index column {column} has {bad.sum()} invalid value(s)")
    for column in NAME_COLUMNS:
        if not table[column].map(lambda v: isinstance(v, str) and v != "").all():
            raise InputError(path, f"index column {column} has empty or non-text values")
    outside = table["file_name"].map(leaves)  # the index stage's own rule (motsynth.py)
    if outside.any():
        name = table["file_name"][outside].iloc[0]
        raise InputError(path, f"index file_name {name!r:.80} points outside the dataset root")
    files = table.groupby(["sequence", "frame"])["file_name"].nunique()
    if (files > 1).any():
        seq, frame = files[files > 1].index[0]
        raise InputError(path, f"index names several files for frame {frame} of sequence {seq}")


def decode_frame(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode a JPEG and resize it to ``size`` = (height, width); damage -> ``BadSample``."""
    try:
        rgb = decode_image(path)
    except BadImage as err:
        if err.reason == "missing":
            raise BadSample(path, "frame file not found") from None
        raise
    return np.asarray(rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _crop(frame: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    h, w = frame.shape[:2]
    x1, y1 = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1))
    x2, y2 = int(np.clip(np.ceil(x2), x1 + 1, w)), int(np.clip(np.ceil(y2), y1 + 1, h))
    patch = Image.fromarray(frame[y1:y2, x1:x2])
    return np.asarray(patch.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def extract_split(
    index_path: Path,
    root: Path,
    out_path: Path,
    skipped_path: Path,
    frame_size: Sequence[int],
    crop_size: Sequence[int],
    policy: str,
) -> dict[str, int]:
    """Pack one split. Boxes are stored in resized-frame pixels (x1, y1, x2, y2)."""
    table = read_index(index_path).sort_values(["sequence", "frame", "ann_id"], kind="stable")
    fh, fw = int(frame_size[0]), int(frame_size[1])
    skips = Skips()
    groups = list(table.groupby(["sequence", "frame"], sort=False))
    with (  # the store and its skip list appear together, or neither does
        atomic_path(out_path) as tmp,
        atomic_path(skipped_path) as skipped_tmp,
        h5py.File(tmp, "w") as h5,
    ):
        frames = h5.create_dataset(
            "frames",
            (len(groups), fh, fw, 3),
            dtype="uint8",
            chunks=(1, fh, fw, 3),
            maxshape=(None, fh, fw, 3),
        )
        kept_objects: list[pd.DataFrame] = []
        boxes, crops = [], []
        n = 0
        for (seq, frame_n), objects in tqdm(groups, desc=f"extract {out_path.stem}", mininterval=5):
            path = root / objects["file_name"].iloc[0]
            try:
                pixels = decode_frame(path, (fh, fw))
            except BadSample as err:
                if policy == "fail":
                    raise InputError(err.path, err.problem) from None
                skips.add(err, f"sequence {seq} frame {frame_n}")
                continue
            frames[n] = pixels
            sx, sy = fw / objects["img_w"].to_numpy(), fh / objects["img_h"].to_numpy()
            x, y = objects["x"].to_numpy(), objects["y"].to_numpy()
            w, h = objects["w"].to_numpy(), objects["h"].to_numpy()
            frame_boxes = np.stack([x * sx, y * sy, (x + w) * sx, (y + h) * sy], axis=1)
            boxes.append(frame_boxes)
            crops.extend(_crop(pixels, b, tuple(crop_size)) for b in frame_boxes)
            kept_objects.append(objects.assign(frame_index=n))
            n += 1
        if n == 0:
            raise InputError(index_path, "no decodable frames in this split")
        frames.resize(n, axis=0)
        objects = pd.concat(kept_objects, ignore_index=True)
        h5.create_dataset("boxes", data=np.concatenate(boxes).astype(np.float32))
        h5.create_dataset("boxes_orig", data=objects[["x", "y", "w", "h"]].to_numpy(np.float32))
        h5.create_dataset("crops", data=np.stack(crops), chunks=(1, *crops[0].shape))
        h5.create_dataset("frame_index", data=objects["frame_index"].to_numpy(np.int64))
        for name in OBJECT_FIELDS:
            h5.create_dataset(name, data=objects[name].to_numpy(np.float32))
        h5.create_dataset("sequence", data=objects["sequence"].astype(str).to_numpy().astype("S"))
        h5.create_dataset("frame", data=objects["frame"].to_numpy(np.int64))
        h5.create_dataset("file_name", data=objects["file_name"].astype(str).to_numpy().astype("S"))
        h5.attrs.update(
            {
                "frame_size": [fh, fw],
                "crop_size": list(crop_size),
                "root": str(root),
                "index": str(index_path),
            }
        )
        skipped_tmp.write_text(skips.to_tsv())
    log.info(
        "%s: %d frames, %d objects; skipped %d frames", out_path.name, n, len(objects), len(skips)
    )
    return {"frames": n, "objects": len(objects), "skipped": len(skips)}


def open_store(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 store: {err}") from None


def object_table(path: Path) -> pd.DataFrame:
    """Per-object geometry and labels of a store (everything but pixels), in store order."""
    with open_store(path) as h5:
        boxes = h5["boxes_orig"][:]
        table = pd.DataFrame({name: h5[name][:] for name in OBJECT_FIELDS})
        table["sequence"] = h5["sequence"][:].astype(str)
        table["frame"] = h5["frame"][:]
        table["file_name"] = h5["file_name"][:].astype(str)
        table["frame_index"] = h5["frame_index"][:]
    table[["x", "y", "w", "h"]] = boxes
    return table


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> uint8 3xHxW. Normalisation happens in the model, on the accelerator:
    converting 720x1280 frames to float on the loader's CPU would cost more than reading them."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


class FrameDataset(Dataset):
    """One item per stored frame: the frame, its boxes, box geometry features, targets.

    The HDF5 file is opened lazily in each worker (h5py handles do not survive a fork).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.table = object_table(self.path)
        self.by_frame = self.table.groupby("frame_index").indices
        self.frame_ids = sorted(self.by_frame)
        with open_store(self.path) as h5:
            self.boxes = h5["boxes"][:]
        self.geometry = geometry_features(self.table)  # per object, computed once
        self.target = self.table["distance"].to_numpy(np.float32)
        self._h5: h5py.File | None = None

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._h5 is None:
            self._h5 = open_store(self.path)
        frame_index = self.frame_ids[i]
        rows = self.by_frame[frame_index]
        return {
            "image": to_tensor(self._h5["frames"][frame_index]),
            "boxes": torch.from_numpy(self.boxes[rows]),
            "geometry": torch.from_numpy(self.geometry[rows]),
            "target": torch.from_numpy(self.target[rows]),
            "rows": torch.from_numpy(rows.astype(np.int64)),
        }


class JpegFrameDataset(FrameDataset):
    """The same items, decoding and resizing the original JPEG every time (benchmark baseline)."""

    def __init__(self, path: Path, root: Path) -> None:
        super().__init__(path)
        first = self.table.groupby("frame_index")["file_name"].first()
        self.files = {fi: Path(root) / name for fi, name in first.items()}
        with open_store(self.path) as h5:
            self.size = tuple(int(v) for v in h5.attrs["frame_size"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        item["image"] = to_tensor(decode_frame(self.files[self.frame_ids[i]], self.size))
        return item


def collate_frames(batch: list[dict[str, torch.Tensor]]) -> dict[str, object]:
    """Stack images; keep one box tensor per image, as torchvision's RoIAlign expects."""
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "boxes": [b["boxes"] for b in batch],
        "geometry": torch.cat([b["geometry"] for b in batch]),
        "target": torch.cat([b["target"] for b in batch]),
        "rows": torch.cat([b["rows"] for b in batch]),
    }


PRIORS = np.array([1.75, 0.55, 0.30], dtype=np.float32)  # class height, width, length (m)


def geometry_features(objects: pd.DataFrame) -> np.ndarray:
    """DisNet's input: [H/h, W/w, D/d] (image over box height, width, diagonal) + priors."""
    img_h, img_w = objects["img_h"].to_numpy(), objects["img_w"].to_numpy()
    h, w = objects["h"].to_numpy(), objects["w"].to_numpy()
    ratios = np.stack([img_h / h, img_w / w, np.hypot(img_h, img_w) / np.hypot(h, w)], axis=1)
    priors = np.broadcast_to(PRIORS, (len(objects), 3))
    return np.concatenate([ratios, priors], axis=1).astype(np.float32)
