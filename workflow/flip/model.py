"""FLIP models: open_clip CLIP towers with image-patch masking.

FLIP's masking is open_clip's ``patch_dropout``: in training mode the vision tower keeps a
random ``1 - mask_ratio`` of the patch tokens (plus the class token) right after the patch
embedding, so the transformer only encodes the visible tokens; eval mode keeps all of them
(zero-shot, probe, unmasked tuning with ``mask_ratio`` 0).

Models come by open_clip name (``ViT-B-16``, ``ViT-L-16``, ...) or the demo's ``flip-tiny``
(``model_configs/flip-tiny.json``, registered with open_clip on import). Weights are always
random (``pretrained=None``) and the tokenizer's BPE vocabulary ships inside open_clip, so
nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

from workflow.common.config import schema_defaults
from workflow.common.errors import InputError

log = logging.getLogger("lsai.flip.model")

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
#: The paper's text length (tokens, start and end included).
CONTEXT_LENGTH = 32
#: Every pre-training setting (config/schema/flip.yaml $defs/flip_train): what a setting the
#: caller leaves out takes, as in the pipeline.
DEFAULTS: dict[str, Any] = schema_defaults("flip_train")

if CONFIG_DIR not in {Path(p).resolve() for p in open_clip.factory._MODEL_CONFIG_PATHS}:
    open_clip.add_model_config(CONFIG_DIR)


def model_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The model part of ``settings`` with defaults, checked (an InputError names the key)."""
    s = {**DEFAULTS, **dict(settings)}
    if s["model"] not in open_clip.list_models():
        raise InputError("model", f"unknown open_clip model {s['model']!r}")
    if not 0.0 <= float(s["mask_ratio"]) < 1.0:
        raise InputError("mask_ratio", f"{s['mask_ratio']} is not in [0, 1)")
    return s


def build_clip(settings: Mapping[str, Any]) -> open_clip.CLIP:
    """A randomly initialised CLIP whose vision tower drops ``mask_ratio`` of the patches in
    training mode; text length ``context_length`` (default 32, as the paper)."""
    s = model_settings(settings)
    model = open_clip.create_model(
        s["model"],
        pretrained=None,
        force_patch_dropout=float(s["mask_ratio"]),
        force_context_length=int(s.get("context_length", CONTEXT_LENGTH)),
        output_dict=True,
    )
    log.debug("%s, mask %.2f: %d parameters", s["model"], float(s["mask_ratio"]),
              sum(p.numel() for p in model.parameters()))  # fmt: skip
    return model


def set_mask_ratio(model: open_clip.CLIP, mask_ratio: float) -> None:
    """Change the patch-dropout ratio of a built model (the unmasked-tuning phase loads
    weights trained with masking; dropout has no parameters, so only the module changes)."""
    visual = model.visual
    if mask_ratio > 0:
        visual.patch_dropout = open_clip.transformer.PatchDropout(float(mask_ratio))
    else:
        visual.patch_dropout = torch.nn.Identity()


def image_transforms(model: open_clip.CLIP) -> tuple[Callable, Callable]:
    """(train, eval) image transforms matching the model's input size and normalisation:
    open_clip's random resized crop (scale 0.9-1) for training, resize + centre crop for eval."""
    cfg = open_clip.transform.PreprocessCfg(**model.visual.preprocess_cfg)
    train = open_clip.transform.image_transform_v2(cfg, is_train=True)
    val = open_clip.transform.image_transform_v2(cfg, is_train=False)
    return train, val


def tokenizer(settings: Mapping[str, Any]) -> Callable[..., torch.Tensor]:
    """open_clip's tokenizer for the model, padding/truncating to ``context_length``."""
    s = model_settings(settings)
    return open_clip.get_tokenizer(
        s["model"], context_length=int(s.get("context_length", CONTEXT_LENGTH))
    )


def image_tower_gflops(settings: Mapping[str, Any], batch: int = 2) -> float:
    """GFLOPs of one pre-training step of the image tower per sample (forward and backward,
    at the run's ``mask_ratio``): the cost that masking cuts, counted by torch's FLOP counter
    from the operators' shapes on the meta device, so it is the same number on any machine
    and costs no compute (a ViT-L/16 as much as the demo's model)."""
    visual = build_clip(settings).visual.to("meta").train()
    size = open_clip.transformer.to_2tuple(visual.preprocess_cfg["size"])
    images = torch.zeros(batch, 3, *size, device="meta")
    with FlopCounterMode(display=False) as counter:
        visual(images).sum().backward()
    return counter.get_total_flops() / batch / 1e9
