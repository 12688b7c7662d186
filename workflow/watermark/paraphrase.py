"""Paraphrase attack by a second local LM: the paper's T5 span attack, with a causal LM.

Kirchenbauer et al. (§7) mask spans of the watermarked text and let T5 fill them in: the words
change while the text stays fluent. Here a second causal LM (any local Hugging Face folder,
with its own tokenizer) does the filling: the watermarked completion is decoded to text and
tokenised by the paraphraser, a nested fraction epsilon of its tokens (one random order per
text) is replaced by samples from the paraphraser's next-token distribution given the text
before each one (the original token excluded, so each edit is a change), and the result is
decoded: the detector reads that text as it reads every other. One forward pass per text and
epsilon, batched: cheap enough for the demo, and on a GPU for an OPT-sized paraphraser.

This is not an instruction-following rewrite (a chat model asked to paraphrase): the demo has
no such model. Word order and length stay, as in the T5 attack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workflow.watermark.attacks import edited_positions, text_rng


@torch.no_grad()
def paraphrase_records(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    generations: Sequence[Mapping[str, Any]],
    epsilons: Sequence[float],
    settings: Mapping[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """Attacked records (``attack: paraphrase``) of every watermarked completion at every
    epsilon; ``settings``: temperature, context_tokens, batch_size."""
    device = next(model.parameters()).device
    limit = int(getattr(model.config, "n_positions", 0) or model.config.max_position_embeddings)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    jobs = []  # (id, epsilon, context ids, completion ids, positions to edit)
    for g in generations:
        context = tokenizer.encode(g["prompt"], add_special_tokens=False)
        completion = tokenizer.encode(g["marked"], add_special_tokens=False)
        room = max(limit - len(completion), 1)
        context = context[-min(int(settings["context_tokens"]), room) :] or [int(pad)]
        for epsilon in epsilons:
            rng = text_rng(f"paraphrase:{g['id']}", seed)  # nested in epsilon, as the others
            where = edited_positions(len(completion), float(epsilon), rng)
            jobs.append((g["id"], float(epsilon), context, completion, where))
    out = []
    batch = int(settings["batch_size"])
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        texts = _fill(model, chunk, int(pad), len(tokenizer), float(settings["temperature"]),
                      generator, device)  # fmt: skip
        for (doc_id, epsilon, *_), ids in zip(chunk, texts, strict=True):
            text = tokenizer.decode(ids, skip_special_tokens=True)
            out.append({"id": doc_id, "attack": "paraphrase", "epsilon": epsilon, "text": text})
    return out


def _fill(
    model: PreTrainedModel,
    chunk: Sequence[tuple[str, float, list[int], list[int], Any]],
    pad: int,
    vocab: int,
    temperature: float,
    generator: torch.Generator,
    device: torch.device,
) -> list[list[int]]:
    """The completions of ``chunk`` with their chosen positions resampled, in one forward pass
    of right-padded context + completion rows."""
    rows = [context + completion for _, _, context, completion, _ in chunk]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
    out = []
    for i, (_, _, context, completion, where) in enumerate(chunk):
        edited = list(completion)
        for position in sorted(int(p) for p in where):
            at = len(context) + position - 1  # the logits that predict this token
            scores = logits[i, at] / temperature
            scores[completion[position]] = -torch.inf  # an edit must change the token
            scores[vocab:] = -torch.inf  # padded output rows are no tokens
            probs = torch.softmax(scores, dim=-1)
            edited[position] = int(torch.multinomial(probs, 1, generator=generator))
        out.append(edited)
    return out
