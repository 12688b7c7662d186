"""The one way a checkpoint is read: tensors and plain values only, never code.

``torch.load(weights_only=False)`` unpickles whatever a file names, so a crafted ``.ckpt``
handed to an evaluation stage (or left in a run folder that a job resumes from) would run its
author's code. Every checkpoint this project reads goes through :func:`load_checkpoint`, which
uses torch's restricted unpickler with an explicit allow-list of the few non-tensor types that
Lightning and the tracks store; anything else is refused as ``error: <path>: ...`` before a
single object is built.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from workflow.common.errors import InputError, first_line

#: Types a checkpoint of this project may hold besides tensors, containers and numbers:
#: the paths that hyper-parameters and ``run_info`` carry.
SAFE_GLOBALS: list[Any] = [pathlib.PosixPath, pathlib.PurePosixPath]

_REFUSED = re.compile(r"GLOBAL ([\w.]+)")
_OPERAND = re.compile(r"Unsupported operand (\d+)")


def safe_load(path: str | os.PathLike[str], extra_globals: list[Any] = ()) -> Any:
    """``torch.load`` on the CPU with the restricted unpickler (raises torch's errors)."""
    with (
        torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_globals]),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", "Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(
    path: str | os.PathLike[str], kind: str = "checkpoint", extra_globals: list[Any] = ()
) -> dict[str, Any]:
    """A checkpoint's dict; a missing, damaged, non-dict or code-carrying file is an
    InputError naming it (``kind``: what the caller expected, for the message;
    ``extra_globals``: plain types a released file of that kind holds beyond ours)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{kind} not found")
    try:
        checkpoint = safe_load(path, extra_globals)
    except pickle.UnpicklingError as err:
        raise InputError(path, refusal(err, kind)) from None
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(path, f"not a readable {kind}: {first_line(err)}") from None
    if not isinstance(checkpoint, dict):
        raise InputError(path, f"not a {kind} (no dict inside)")
    return checkpoint


def refusal(err: BaseException, kind: str) -> str:
    """The restricted unpickler's refusal in one line: what the file asked to build."""
    text = str(err)
    if found := _REFUSED.search(text):
        return (
            f"refused: the {kind} asks to run or build {found.group(1)}, which a checkpoint "
            "never needs (only tensors and plain values are loaded)"
        )
    if found := _OPERAND.search(text):
        return (
            f"not a readable {kind}: a pickle instruction torch's safe loader refuses "
            f"(opcode {found.group(1)})"
        )
    return f"not a readable {kind}: {first_line(err)}"


def load_weights(path: str | os.PathLike[str], kind: str = "weights") -> dict[str, torch.Tensor]:
    """A state dict of tensors from a local weights file (a bare state dict, or a checkpoint
    holding one under ``state_dict``), read as safely as :func:`load_checkpoint`."""
    state = load_checkpoint(path, kind)
    state = state.get("state_dict", state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, f"not a state dict of tensors ({kind})")
    return state
