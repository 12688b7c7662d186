"""``wsi_features``: a frozen encoder over every tile of every scale of one slide.

Pixels are read again from the slide with OpenSlide (the tiling stage stores coordinates only),
by DataLoader workers that each open the slide once; the encoder runs in batches. The encoder
is a timm model whose weights come from a local file (``weights``, a checkpoint as released:
workflow/wsi/encoders.py), never from a hub; without weights it is randomly initialised from
``seed`` (enough for the demo's planted texture). ``weights`` may instead map each
magnification to its own file: DAS-MIL trains one DINO per scale, so each scale's tiles go
through that scale's encoder (one architecture, so one feature width).
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
from workflow.common.config import ConfigError
from workflow.common.errors import InputError
from workflow.wsi.encoders import import_weights
from workflow.wsi.slide import Slide, open_slide
from workflow.wsi.sources import scale_weights
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


Encoders = torch.nn.Module | Mapping[float, torch.nn.Module]


def build_encoder(
    settings: Mapping[str, Any], weights: str | Path | None = None
) -> torch.nn.Module:
    """A timm model without its classifier; weights imported from ``weights`` (default:
    ``settings['weights']`` when that is one path) or, with none, seeded."""
    import timm

    weights = weights or settings.get("weights")
    if isinstance(weights, Mapping):
        raise TypeError("per-scale weights: build_encoders builds one encoder per scale")
    torch.manual_seed(int(settings.get("seed", 0)))
    model = timm.create_model(settings["encoder"], pretrained=False, num_classes=0)
    if weights:
        import_weights(model, Path(weights), settings.get("checkpoint_key", "teacher"))
    return model.eval().requires_grad_(False)


def build_encoders(settings: Mapping[str, Any]) -> Encoders:
    """The features stage's encoders: one for every scale, or with ``weights`` a mapping
    magnification -> file, one per magnification (same architecture, so one feature width)."""
    weights = settings.get("weights")
    if not isinstance(weights, Mapping):
        return build_encoder(settings)
    try:
        paths = scale_weights(weights)
    except ConfigError as err:  # a stage run by hand: the rule's settings are checked at start
        raise InputError("--settings", str(err)) from None
    encoders = {mag: build_encoder(settings, path) for mag, path in paths.items()}
    widths = {f"x{mag:g}": feature_width(model) for mag, model in encoders.items()}
    if len(set(widths.values())) > 1:
        raise InputError("--settings", f"per-scale encoders differ in feature width: {widths}")
    return encoders


def scale_encoders(
    encoders: Encoders, scales: list[TileScale], tiling: Path
) -> list[torch.nn.Module]:
    """The encoder of each scale of a tiling; a scale without one is an InputError."""
    if isinstance(encoders, torch.nn.Module):
        return [encoders] * len(scales)
    if missing := [s.name for s in scales if s.magnification not in encoders]:
        have = ", ".join(f"x{m:g}" for m in sorted(encoders))
        raise InputError(
            tiling,
            f"tiled at {', '.join(missing)}, but the per-scale encoder weights name only {have}",
        )
    return [encoders[s.magnification] for s in scales]


def encode_slide(
    tiling_path: Path,
    out_path: Path,
    encoder: Encoders,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    attrs: Mapping[str, Any] | None = None,
    input_size: int | None = None,
) -> dict[str, int]:
    """Features of every tile of one slide -> HDF5 (per scale: features, coords, parent), each
    scale through its encoder (``encoder``: one model, or magnification -> model); ``attrs``
    are added to the file's attributes (e.g. the settings it was made with)."""
    tiling = read_tiling(tiling_path)
    encoders = [e.to(device) for e in scale_encoders(encoder, tiling.scales, Path(tiling_path))]
    slide_path = Path(tiling.slide_path)
    if not slide_path.is_file():
        raise InputError(slide_path, "slide named by the tiling file not found")
    loader = DataLoader(
        TileDataset(slide_path, tiling.mpp, tiling.scales),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device != "cpu",
    )
    outputs: list[list[np.ndarray]] = [[] for _ in tiling.scales]
    mean, std = MEAN.to(device), STD.to(device)
    with torch.inference_mode():
        for pixels, scale_ids in tqdm(loader, desc=f"encode {tiling.slide_id}", mininterval=5):
            batch = (pixels.to(device).float() / 255.0 - mean) / std
            if input_size and batch.shape[-1] != input_size:
                batch = torch.nn.functional.interpolate(
                    batch, size=(input_size, input_size), mode="bilinear", antialias=True
                )
            _encode_batch(batch, scale_ids, encoders, outputs)
    width = feature_width(encoders[0])
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update({**tiling.attrs, **(attrs or {})})
        for scale, chunks in zip(tiling.scales, outputs, strict=True):
            group = h5.create_group(scale.name)
            group.attrs.update({k: getattr(scale, k) for k in SCALE_ATTRS})
            group["features"] = np.concatenate(chunks) if chunks else np.zeros((0, width), "f4")
            group["coords"] = scale.coords
            group["parent"] = scale.parent
    return tiling.counts


def _encode_batch(
    batch: torch.Tensor,
    scale_ids: torch.Tensor,
    encoders: list[torch.nn.Module],
    outputs: list[list[np.ndarray]],
) -> None:
    """Append each scale's rows of ``batch``, encoded, to ``outputs``: the whole batch in one
    pass when every scale shares the encoder, else each scale's rows through its own."""
    ids = scale_ids.numpy()
    if all(e is encoders[0] for e in encoders):
        features = encoders[0](batch).float().cpu().numpy()
        for s in np.unique(ids):
            outputs[s].append(features[ids == s])
        return
    for s in np.unique(ids):
        rows = torch.from_numpy(ids == s).to(batch.device)
        outputs[s].append(encoders[s](batch[rows]).float().cpu().numpy())
