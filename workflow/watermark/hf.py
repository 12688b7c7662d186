"""Local Hugging Face model folders, as every watermark stage reads them: a causal LM with its
tokenizer, or the tokenizer alone (detection and attacks need no weights, and importing
``transformers``' model classes costs seconds a CPU job does not need to pay).

Any problem with a folder is an ``InputError`` naming it; nothing is downloaded
(``local_files_only``).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from workflow.common.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def vocabulary_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """The green lists' vocabulary: the tokenizer's (a model's output layer may be padded
    beyond it), as the reference code does."""
    return len(tokenizer.get_vocab())


def load_lm(path: str | PathLike[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a Hugging Face folder, in eval mode; any problem
    with the folder is an InputError naming it."""
    path = Path(path)
    tokenizer = load_tokenizer(path)
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        raise InputError(path, f"cannot load the model: {_first_line(err)}") from None
    if len(tokenizer) > model.config.vocab_size:
        raise InputError(
            path,
            f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
            f"{model.config.vocab_size}",
        )
    return model.eval(), tokenizer


def load_tokenizer(path: str | PathLike[str]) -> PreTrainedTokenizerBase:
    """The tokenizer of a Hugging Face model folder (detection needs no weights)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "model folder not found")
    if not (path / "config.json").is_file():
        raise InputError(path, "no config.json: not a Hugging Face model folder")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        raise InputError(path, f"cannot load the tokenizer: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
