"""Watermarked and unwatermarked completions of prompts, batched, with ``model.generate``.

Every completion is exactly ``new_tokens`` long (``min_new_tokens`` = ``max_new_tokens``): the
z-test's power grows with T, so a completion that stopped early would test a different T.
Prompts are left-padded into batches; each batch's sampling is seeded from the run's seed and
the batch index, so a rerun (or a resumed one) reproduces the same texts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workflow.watermark.hf import vocabulary_size
from workflow.watermark.processor import WatermarkLogitsProcessor
from workflow.watermark.prompts import Prompt
from workflow.watermark.schemes import KGW, scheme_of

log = logging.getLogger("lsai.watermark")

DECODINGS = ("multinomial", "beam")


@dataclass(frozen=True)
class Completion:
    id: str
    text: str
    ids: list[int]
    watermarked: bool


def processor(settings: Mapping[str, Any], vocab_size: int) -> WatermarkLogitsProcessor:
    """A KGW scheme's logits processor (green lists, delta)."""
    return KGW(settings, vocab_size).processor()


def generation_kwargs(settings: Mapping[str, Any], pad_id: int) -> dict[str, Any]:
    """``generate`` arguments of a decoding: multinomial sampling (temperature, no top-k, as
    the paper) or beam search."""
    decoding = settings["decoding"]
    if decoding not in DECODINGS:
        raise ValueError(f"unknown decoding {decoding!r} (known: {', '.join(DECODINGS)})")
    new = int(settings["new_tokens"])
    kwargs: dict[str, Any] = {"max_new_tokens": new, "min_new_tokens": new, "pad_token_id": pad_id}
    if decoding == "multinomial":
        return {**kwargs, "do_sample": True, "temperature": float(settings["temperature"]),
                "top_k": 0, "top_p": 1.0}  # fmt: skip
    return {**kwargs, "do_sample": False, "num_beams": int(settings["num_beams"])}


def beyond_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of a padded output layer's rows past the tokenizer (OPT: 50272 rows, 50265 tokens):
    never sampled, for no text holds them and detection refuses ids outside the vocabulary."""
    return list(range(vocabulary_size(tokenizer), int(model.config.vocab_size)))


def left_padded(prompts: Sequence[Prompt], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of prompts of different lengths, padded on the left so
    every row's next token follows its own prompt."""
    width = max(len(p.prompt_ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        n = len(prompt.prompt_ids)
        ids[row, width - n :] = torch.tensor(prompt.prompt_ids, dtype=torch.long)
        mask[row, width - n :] = 1
    return ids, mask


@torch.no_grad()
def complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    settings: Mapping[str, Any],
    watermark: bool,
    seed: int,
) -> tuple[list[Completion], float]:
    """Completions of ``prompts`` (with the watermark or without), and tokens per second."""
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    kwargs = generation_kwargs(settings, int(pad_id))
    if padded := beyond_tokenizer(model, tokenizer):
        kwargs["suppress_tokens"] = padded
    if watermark:
        kwargs |= scheme_of(settings, vocabulary_size(tokenizer)).generate_kwargs()
    device = next(model.parameters()).device
    batch = int(settings["batch_size"])
    out: list[Completion] = []
    started, generated = time.perf_counter(), 0
    label = "watermarked" if watermark else "plain"
    for index in tqdm(range(0, len(prompts), batch), desc=label, unit="batch", mininterval=10):
        chunk = prompts[index : index + batch]
        ids, mask = left_padded(chunk, int(pad_id))
        torch.manual_seed(seed * 1_000_003 + index)
        tokens = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = tokens[:, ids.shape[1] :].cpu()
        generated += new.numel()
        for prompt, row in zip(chunk, new.tolist(), strict=True):
            text = tokenizer.decode(row, skip_special_tokens=True)
            out.append(Completion(prompt.id, text, row, watermark))
    seconds = time.perf_counter() - started
    return out, generated / max(seconds, 1e-9)


def generation_records(
    prompts: Sequence[Prompt], marked: Sequence[Completion], plain: Sequence[Completion]
) -> list[dict[str, Any]]:
    """One record per prompt, token ids (what detection reads) beside the texts (for people)."""
    return [
        {
            "id": p.id,
            "prompt_ids": p.prompt_ids,
            "human_ids": p.completion_ids,
            "marked_ids": m.ids,
            "plain_ids": u.ids,
            "prompt": p.prompt,
            "human": p.completion,
            "marked": m.text,
            "plain": u.text,
        }  # fmt: skip
        for p, m, u in zip(prompts, marked, plain, strict=True)
    ]
