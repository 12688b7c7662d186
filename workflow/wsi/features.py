"""``wsi_features``: a frozen encoder over every tile of every scale of one slide.

Pixels are read again from the slide with OpenSlide (the tiling stage stores coordinates only),
by DataLoader workers that each open the slide once; the encoder runs in batches. The encoder
is a timm model whose weights come from a local file (``weights``), never from a hub; without
weights it is randomly initialised from ``seed`` (enough for the demo's planted texture).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from workflow.common.atomic import atomic_path
from workflow.common.checkpoint import load_weights
from workflow.common.errors import InputError
from workflow.wsi.slide import Slide, open_slide
from workflow.wsi.tiling import TileScale, read_tiling

log = logging.getLogger("lsai.wsi.features")

SCALE_ATTRS = ("magnification", "level", "downsample", "read_size", "patch_size", "footprint")
# ImageNet statistics: what timm's (and torchvision's) pretrained encoders expect.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class TileDataset(Dataset):
    """Every tile of the given scales as a uint8 CHW tensor; the slide opens once per worker."""

    def __init__(self, slide_path: Path, mpp: float, scales: list[TileScale]) -> None:
        self.slide_path, self.mpp = Path(slide_path), mpp
        self.items = [(s, i) for s, scale in enumerate(scales) for i in range(len(scale.coords))]
        self.scales = scales
        self._slide: Slide | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._slide is None:
            self._slide = open_slide(self.slide_path, mpp=self.mpp, probe=False)
        s, i = self.items[index]
        scale = self.scales[s]
        x, y = (int(v) for v in scale.coords[i])
        pixels = self._slide.read_rgb((x, y), scale.level, (scale.read_size, scale.read_size))
        if scale.read_size != scale.patch_size:
            size = (scale.patch_size, scale.patch_size)
            pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
        return torch.from_numpy(np.array(pixels)).permute(2, 0, 1), s


def feature_width(model: torch.nn.Module) -> int:
    """Width of a timm model's pooled output without classifier (its head's hidden size where
    it has one, as MobileNetV3's 1024 after ``conv_head``; otherwise ``num_features``)."""
    return int(getattr(model, "head_hidden_size", None) or getattr(model, "num_features", 0))


def build_encoder(settings: Mapping[str, Any]) -> torch.nn.Module:
    """A timm model without its classifier; weights from ``settings['weights']`` or seeded."""
    import timm

    torch.manual_seed(int(settings.get("seed", 0)))
    model = timm.create_model(settings["encoder"], pretrained=False, num_classes=0)
    weights = settings.get("weights")
    if weights:
        path = Path(weights)
        state = load_weights(path, "encoder weights")
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:
            raise InputError(path, f"weights lack {len(missing)} encoder tensors: {missing[:3]}")
    return model.eval().requires_grad_(False)


def encode_slide(
    tiling_path: Path,
    out_path: Path,
    encoder: torch.nn.Module,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    attrs: Mapping[str, Any] | None = None,
    input_size: int | None = None,
) -> dict[str, int]:
    """Features of every tile of one slide -> HDF5 (per scale: features, coords, parent);
    ``attrs`` are added to the file's attributes (e.g. the settings it was made with)."""
    tiling = read_tiling(tiling_path)
    slide_path = Path(tiling.slide_path)
    if not slide_path.is_file():
        raise InputError(slide_path, "slide named by the tiling file not found")
    loader = DataLoader(
        TileDataset(slide_path, tiling.mpp, tiling.scales),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device != "cpu",
    )
    encoder = encoder.to(device)
    outputs: list[list[np.ndarray]] = [[] for _ in tiling.scales]
    mean, std = MEAN.to(device), STD.to(device)
    with torch.inference_mode():
        for pixels, scale_ids in tqdm(loader, desc=f"encode {tiling.slide_id}", mininterval=5):
            batch = (pixels.to(device).float() / 255.0 - mean) / std
            if input_size and batch.shape[-1] != input_size:
                batch = torch.nn.functional.interpolate(
                    batch, size=(input_size, input_size), mode="bilinear", antialias=True
                )
            features = encoder(batch).float().cpu().numpy()
            for s in np.unique(scale_ids.numpy()):
                outputs[s].append(features[scale_ids.numpy() == s])
    width = feature_width(encoder)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update({**tiling.attrs, **(attrs or {})})
        for scale, chunks in zip(tiling.scales, outputs, strict=True):
            group = h5.create_group(scale.name)
            group.attrs.update({k: getattr(scale, k) for k in SCALE_ATTRS})
            group["features"] = np.concatenate(chunks) if chunks else np.zeros((0, width), "f4")
            group["coords"] = scale.coords
            group["parent"] = scale.parent
    return tiling.counts
