"""Watermarking schemes behind one interface: what generation adds to ``model.generate`` and
what detection counts in a text. The pipeline (generate -> attack -> detect -> evaluate) only
talks to a :class:`Scheme`, so a new scheme is one class here and one name in the schema.

Detection of every scheme is a one-proportion z-test: each scored token contributes
``trials`` Bernoulli draws that hit with probability ``null_p`` in text the scheme did not
write, and the watermark raises the hits. KGW (``lefthash``, ``selfhash``, ``unigram``, a
plug-in seeding scheme) counts one green/red draw per token (``null_p`` = gamma); SynthID
counts its ``depth`` g-values per token (``null_p`` = 1/2).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessorList, SynthIDTextWatermarkingConfig
from transformers.generation.logits_process import SynthIDTextWatermarkLogitsProcessor

from workflow.watermark import greenlist
from workflow.watermark.detect import scored_flags
from workflow.watermark.greenlist import DEFAULT_KEY
from workflow.watermark.processor import WatermarkLogitsProcessor


class Scheme:
    """A watermark: generation arguments and the per-token hits detection counts."""

    #: Probability of a hit per draw in text the scheme did not write.
    null_p: float
    #: Draws per scored token.
    trials: int = 1

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make ``model.generate`` write watermarked text."""
        raise NotImplementedError

    def hits(self, texts: Sequence[Sequence[int]], repeated_once: bool) -> list[torch.Tensor]:
        """Per text, the hits (0 .. ``trials``) of each scored token, in order;
        ``repeated_once`` scores a repeated context (n-gram) once."""
        raise NotImplementedError


class KGW(Scheme):
    """Kirchenbauer et al.'s green lists (greenlist.py): delta added to the green logits."""

    def __init__(self, settings: Mapping[str, Any], vocab_size: int) -> None:
        self.settings = settings
        self.gamma = float(settings["gamma"])
        self.seeding = greenlist.scheme(settings["scheme"])
        self.key = int(settings.get("key", DEFAULT_KEY))
        self.vocab_size = vocab_size
        self.null_p = self.gamma

    def processor(self) -> WatermarkLogitsProcessor:
        delta = float(self.settings["delta"])  # generation's only: detection needs no delta
        return WatermarkLogitsProcessor(self.vocab_size, self.gamma, delta, self.seeding,
                                        key=self.key)  # fmt: skip

    def generate_kwargs(self) -> dict[str, Any]:
        return {"logits_processor": LogitsProcessorList([self.processor()])}

    def hits(self, texts: Sequence[Sequence[int]], repeated_once: bool) -> list[torch.Tensor]:
        flags = scored_flags(texts, self.vocab_size, self.gamma, self.seeding, key=self.key,
                             ignore_repeated_ngrams=repeated_once)  # fmt: skip
        return [f.long() for f in flags]


#: SynthID's settings as transformers' documentation example: 5-grams, 30 tournament layers.
SYNTHID_NGRAM = 5
SYNTHID_DEPTH = 30


class SynthID(Scheme):
    """SynthID-Text (Dathathri et al. 2024) through transformers' own implementation:
    tournament sampling by ``SynthIDTextWatermarkingConfig`` in ``generate``, and detection by
    its g-values and context-repetition mask (``compute_g_values``,
    ``compute_context_repetition_mask``), scored with the paper's unweighted Mean score as a
    z-test. transformers' ``SynthIDTextWatermarkDetector`` needs a Bayesian detector trained
    on watermarked and unwatermarked text of the model; the Mean score needs no training.
    The ``depth`` keys are drawn from the run's ``key``; gamma and delta do not apply."""

    null_p = 0.5
    trials = SYNTHID_DEPTH

    def __init__(self, settings: Mapping[str, Any]) -> None:
        key = int(settings.get("key", DEFAULT_KEY))
        self.keys = np.random.default_rng(key).integers(0, 2**31, SYNTHID_DEPTH).tolist()
        self.config = SynthIDTextWatermarkingConfig(ngram_len=SYNTHID_NGRAM, keys=self.keys)

    @functools.cached_property
    def detector(self) -> SynthIDTextWatermarkLogitsProcessor:
        """The processor generation used, on the CPU, for its g-values."""
        return self.config.construct_processor(0, torch.device("cpu"))  # vocab: unused

    def generate_kwargs(self) -> dict[str, Any]:
        return {"watermarking_config": self.config}  # a fresh processor per generate call

    def hits(self, texts: Sequence[Sequence[int]], repeated_once: bool) -> list[torch.Tensor]:
        """g-values summed over the layers of every token after the first n - 1; the tokens
        whose context came earlier in the text are left out, as SynthID's detectors do (a
        repeated context was not watermarked again at generation)."""
        out: list[torch.Tensor] = [torch.zeros(0, dtype=torch.long)] * len(texts)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(texts):
            if len(ids) >= SYNTHID_NGRAM:
                by_length.setdefault(len(ids), []).append(i)
        for indices in by_length.values():  # texts of one length in one batch: 20x fewer calls
            batch = torch.as_tensor([list(texts[i]) for i in indices], dtype=torch.long)
            g = self.detector.compute_g_values(batch)  # (texts, tokens, depth)
            fresh = self.detector.compute_context_repetition_mask(batch).bool()
            for row, i in enumerate(indices):
                out[i] = g[row][fresh[row]].sum(dim=-1).long()
        return out


SCHEMES_OF_THEIR_OWN = {"synthid": SynthID}


def scheme_of(settings: Mapping[str, Any], vocab_size: int) -> Scheme:
    """The scheme ``settings['scheme']`` names: ``synthid``, or a KGW seeding scheme."""
    name = settings["scheme"]
    if isinstance(name, str) and name in SCHEMES_OF_THEIR_OWN:
        return SCHEMES_OF_THEIR_OWN[name](settings)
    return KGW(settings, vocab_size)
