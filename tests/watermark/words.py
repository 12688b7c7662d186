"""A real Hugging Face tokenizer whose tokens are the words ``w0 .. w{n-1}``: text written
from token ids reads back as the same ids, so tests of text-in scoring can plant ids."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    words = {f"w{i}": i for i in range(vocab)}
    core = Tokenizer(models.WordLevel(words, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core)


def as_text(ids: Sequence[int]) -> str:
    return " ".join(f"w{i}" for i in ids)
