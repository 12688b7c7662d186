"""Logits processor that biases generation towards green tokens (soft watermark, delta > 0).

Equivalent to the reference ``WatermarkLogitsProcessor`` but batched: seeds of all rows (and of
all candidates, for self-salted schemes) are computed with tensor ops and each unique seed's
green list is drawn once - torch's CPU permutation, one seed at a time on the CPU, or all
seeds at once on the scores' GPU (randperm.py: the same lists, no CPU round trip per seed).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from workflow.watermark import greenlist
from workflow.watermark.greenlist import (
    DEFAULT_KEY,
    SeedingScheme,
    green_masks,
    is_green,
    prf_seeds,
)

#: The reference's rejection sampling checks only the most likely candidates ("fixed_compute").
#: Its loop breaks after index 40, i.e. it checks 41; transformers' port checks 40. Only the
#: strength of the bias depends on this, never what a detector sees as green.
SELF_SALT_CANDIDATES = 40
#: Where green lists are drawn: ``auto`` - all at once on the scores' device when that is a
#: GPU, else one seed at a time on the CPU (faster there: tests/benchmarks/greenlist_benchmark.py).
DRAWS = ("auto", "cpu", "vectorised")


class WatermarkLogitsProcessor(LogitsProcessor):
    """Add ``delta`` to the logits of green tokens; pass to ``generate(logits_processor=...)``.

    ``vocab_size`` must be the one detection uses (the reference uses the tokenizer's vocabulary
    size); extra columns of ``scores`` (padded output layers) are never biased.
    """

    def __init__(
        self,
        vocab_size: int,
        gamma: float,
        delta: float,
        scheme: str | SeedingScheme,
        key: int = DEFAULT_KEY,
        self_salt_candidates: int = SELF_SALT_CANDIDATES,
        draw: str = "auto",
    ) -> None:
        greenlist.check_gamma(gamma)
        if self_salt_candidates < 1:
            raise ValueError("self_salt_candidates must be at least 1")
        if draw not in DRAWS:
            raise ValueError(f"draw must be one of {', '.join(DRAWS)}, got {draw!r}")
        self.draw = draw
        self.vocab_size = vocab_size
        self.gamma = gamma
        self.delta = delta
        self.scheme = greenlist.scheme(scheme)
        self.key = key
        self.self_salt_candidates = self_salt_candidates

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] < self.vocab_size:
            raise ValueError(
                f"scores have {scores.shape[-1]} columns < vocab_size {self.vocab_size}"
            )
        if input_ids.shape[-1] < self.scheme.lookback:
            return scores  # not enough context to seed; the reference would raise
        context = input_ids[:, input_ids.shape[-1] - self.scheme.lookback :].cpu()
        vectorised = self.draw == "vectorised" or (
            self.draw == "auto" and scores.device.type != "cpu"
        )
        if self.scheme.self_salt:
            green = self._self_salted_green(context, scores, vectorised)
        else:
            green = self._green(context, scores, vectorised)
        return scores + self.delta * green.to(dtype=scores.dtype)

    def _green(self, context: torch.Tensor, scores: torch.Tensor, vectorised: bool) -> torch.Tensor:
        """Green masks of each row's seed, padded to the width of the scores."""
        seeds = prf_seeds(context, self.scheme, self.key)  # on the CPU, as the hash table
        green = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        green[:, : self.vocab_size] = green_masks(
            seeds, self.vocab_size, self.gamma, vectorised, device=scores.device
        )
        return green

    def _self_salted_green(
        self, context: torch.Tensor, scores: torch.Tensor, vectorised: bool
    ) -> torch.Tensor:
        """Top candidates that are green under a seed that includes themselves (Algorithm 3)."""
        k = min(self.self_salt_candidates, scores.shape[-1])
        top = scores.topk(k, dim=-1).indices
        candidates = top.cpu()  # the seeds' hash table lives on the CPU
        rows = candidates.shape[0]
        windows = torch.cat([context[:, None, :].expand(rows, k, -1), candidates[..., None]], -1)
        seeds = prf_seeds(windows, self.scheme, self.key)
        # the lists on the scores' device (the candidates are already there), or on the CPU
        index = top if vectorised else candidates
        hits = is_green(seeds.to(index.device), index, self.vocab_size, self.gamma, vectorised)
        green = torch.zeros(scores.shape, dtype=torch.bool, device=index.device)
        return green.scatter_(1, index, hits).to(scores.device)

    def __repr__(self) -> str:
        return (
            f"WatermarkLogitsProcessor(vocab_size={self.vocab_size}, gamma={self.gamma}, "
            f"delta={self.delta}, scheme={self.scheme.name!r})"
        )
