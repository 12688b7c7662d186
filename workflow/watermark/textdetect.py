"""Is this text watermarked? Text in, as a reader has it: normalise, tokenise with the
generator's tokenizer, score every token (the reference ``WatermarkDetector.detect``).

Scoring token ids that never passed through text (the pipeline's generations) overstates z
when decoding and re-encoding would give other tokens; a detector in use only ever sees text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from workflow.watermark.detect import TooShort, score_hits
from workflow.watermark.hf import vocabulary_size
from workflow.watermark.normalize import normalize
from workflow.watermark.schemes import scheme_of


@dataclass(frozen=True)
class TextVerdict:
    """A text's detection: its score and whether it is flagged (z above ``z_threshold``)."""

    characters: int
    normalizers: tuple[str, ...]
    tokens: int
    green: int
    green_fraction: float
    gamma: float
    z: float
    p_value: float
    z_threshold: float
    watermarked: bool

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "normalizers": list(self.normalizers)}


def text_ids(text: str, tokenizer: PreTrainedTokenizerBase, normalizers: list[str]) -> list[int]:
    """The ids a detector scores: the normalised text's tokens, no special tokens added and a
    leading BOS dropped (as the reference)."""
    ids = tokenizer(normalize(text, normalizers), add_special_tokens=False)["input_ids"]
    if ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id:
        ids = ids[1:]
    return list(ids)


def detect_text(
    text: str,
    tokenizer: PreTrainedTokenizerBase,
    settings: Mapping[str, Any],
    detect: Mapping[str, Any],
) -> TextVerdict:
    """``settings``: the generator's gamma, scheme, key (schema $defs/watermark_train);
    ``detect``: z_threshold, ignore_repeated_ngrams, normalizers ($defs/watermark_detect).
    Raises detect.TooShort when no token can be scored."""
    normalizers = list(detect.get("normalizers") or [])
    scheme = scheme_of(settings, vocabulary_size(tokenizer))
    ids = text_ids(text, tokenizer, normalizers)
    hits = scheme.hits([ids], bool(detect["ignore_repeated_ngrams"]))[0]
    result = score_hits(hits, scheme.null_p, scheme.trials)
    if result.z is None or result.p_value is None:
        raise TooShort(result.tokens, 1)
    threshold = float(detect["z_threshold"])
    return TextVerdict(
        characters=len(text), normalizers=tuple(normalizers), tokens=result.tokens,
        green=result.green, green_fraction=result.green / (result.tokens * scheme.trials),
        gamma=scheme.null_p, z=result.z, p_value=result.p_value, z_threshold=threshold,
        watermarked=result.z > threshold,
    )  # fmt: skip


def report(verdict: TextVerdict, source: str) -> str:
    """The verdict as a person reads it."""
    v = verdict
    steps = ", ".join(v.normalizers) or "none"
    label = "WATERMARKED" if v.watermarked else "not watermarked"
    return "\n".join([
        f"text: {source} ({v.characters} characters; normalised: {steps})",
        f"tokens scored: {v.tokens}; green: {v.green} ({v.green_fraction:.3f}, "
        f"expected {v.gamma:g} without a watermark)",
        f"z: {v.z:.2f}; p-value: {v.p_value:.3g}",
        f"verdict: {label} (z {'>' if v.watermarked else '<='} {v.z_threshold:g})",
    ])  # fmt: skip
