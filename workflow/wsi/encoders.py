"""Encoder weights as released: DINO, timm and torchvision checkpoints into a timm model.

A DINO training checkpoint (the ``checkpoint.pth`` that DAS-MIL releases per scale) holds the
``teacher`` and ``student`` networks under ``backbone.`` (the student also under ``module.``),
each with a projection ``head`` the encoder does not have, beside the optimiser and an
``argparse.Namespace`` of arguments; timm and torchvision release bare state dicts (their
ResNet names are the same), training scripts wrap them in ``state_dict`` or ``model``.
:func:`import_weights` finds the encoder's tensors in any of these as DINO's own
``eval_linear.py`` does, then loads them strictly: a tensor the encoder needs that the file
lacks, or holds in another shape, is an ``InputError`` naming it and the file's layout.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from workflow.common.checkpoint import load_checkpoint
from workflow.common.errors import InputError, first_line

log = logging.getLogger("lsai.wsi.encoders")

#: Wrappers a state dict is found under after the chosen ``checkpoint_key``.
WRAPPERS = ("state_dict", "model", "module")
#: Name prefixes of DDP (``module.``) and DINO's MultiCropWrapper (``backbone.``).
PREFIXES = ("module.", "backbone.")
#: Plain types a released checkpoint holds besides tensors: DINO's and timm's ``args``.
RELEASED_GLOBALS: list[Any] = [argparse.Namespace]
KIND = "encoder weights"
GZIP_MAGIC = b"\x1f\x8b"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The file's top-level dict: a ``.safetensors`` file, or a torch file read with the
    restricted unpickler (``argparse.Namespace`` allowed, nothing that runs code); a
    gzip-compressed one is refused with what to do."""
    if path.suffix != ".safetensors":
        if path.is_file() and path.open("rb").read(2) == GZIP_MAGIC:
            raise InputError(
                path, f"gzip-compressed {KIND} (as DAS-MIL releases them): gunzip first"
            )
        return load_checkpoint(path, KIND, RELEASED_GLOBALS)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(path, f"{KIND} not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(path, f"not a readable {KIND}: {first_line(err)}") from None


def encoder_state(
    checkpoint: Mapping[str, Any], checkpoint_key: str = "teacher"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of the network under ``checkpoint_key`` or a wrapper (down to three levels),
    ``module.`` / ``backbone.`` prefixes stripped, and the keys followed to reach them."""
    state, path = checkpoint, []
    for _ in range(3):
        key = next(
            (k for k in (checkpoint_key, *WRAPPERS) if isinstance(state.get(k), Mapping)), None
        )
        if key is None:
            break
        state, path = state[key], [*path, key]
    tensors = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            while name.startswith(PREFIXES):
                name = name.split(".", 1)[1]
            tensors[name] = value
    return tensors, path


def _few(names: list[str], n: int = 3) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def import_weights(model: torch.nn.Module, path: Path, checkpoint_key: str = "teacher") -> None:
    """Load ``path`` (any layout above) into ``model``; entries it does not have (a DINO or
    classifier head) are dropped, every tensor it has must be there in its shape."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    state, followed = encoder_state(checkpoint, checkpoint_key)
    layout = f"the file's top-level keys: {_few(sorted(map(str, checkpoint)), 8)}"
    if followed:
        layout += f"; tensors read from {'/'.join(followed)}"
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} for {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise InputError(
            path, f"{KIND} of another shape than the encoder's: {_few(wrong)}; {layout}"
        )
    kept = {k: v for k, v in state.items() if k in own}
    missing, _ = model.load_state_dict(kept, strict=False)
    if missing:
        raise InputError(
            path, f"{KIND} lack {len(missing)} of the encoder's {len(own)} tensors "
            f"({_few(missing)}); {layout}",
        )  # fmt: skip
    dropped = len(state) - len(kept)
    log.info(
        "%s: %d tensors loaded, %d the encoder has no use for dropped", path, len(kept), dropped
    )
