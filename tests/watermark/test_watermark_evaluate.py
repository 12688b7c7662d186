"""Detection metrics on hand-made z-scores; oracle perplexity against a by-hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from workflow.watermark.corpus import documents
from workflow.watermark.evaluate import (
    HIGHER_IS_BETTER,
    detection_metrics,
    perplexities,
    read_texts,
    similarity,
)


def test_detection_metrics_by_hand():
    marked, plain, human = [5.0, 6.0, None, 3.0], [0.0, 1.0, 4.5], [-1.0, 0.5]
    got = detection_metrics(marked, plain, human, threshold=4.0)
    assert got["tpr"] == 0.5  # the unscorable text is a miss
    assert got["fpr_plain"] == pytest.approx(1 / 3) and got["fpr_human"] == 0.0
    # 20 positive/negative pairs: 5 and 6 beat all 5 negatives, 3 beats 4, the miss none
    assert got["auc"] == pytest.approx(14 / 20)
    assert got["tpr_at_1pct_fpr"] == 0.5  # above every negative: 5 and 6
    assert set(got) <= set(HIGHER_IS_BETTER)
    perfect = detection_metrics([9.0, 8.0], [1.0], [None])
    assert perfect["auc"] == 1.0 and perfect["tpr_at_1pct_fpr"] == 1.0
    assert detection_metrics([None], [None], [None])["tpr"] == 0.0  # no nan anywhere
    # perfectly separated hundreds: exactly 1 (torchmetrics' float32 AUC gave 0.99999994)
    generator = torch.Generator().manual_seed(0)
    marked = (8 + torch.randn(300, generator=generator, dtype=torch.float64)).tolist()
    plain = torch.randn(2000, generator=generator, dtype=torch.float64).tolist()
    assert detection_metrics(marked, plain, [])["auc"] == 1.0
    # a z exactly at the threshold is not flagged (the reference's z > z_threshold)
    at = detection_metrics([4.0, 4.5], [4.0], [3.0], threshold=4.0)
    assert at["tpr"] == 0.5 and at["fpr_plain"] == 0.0


def test_perplexity_scores_the_completion_given_the_prompt(tiny_lm):
    model, tokenizer, _ = tiny_lm
    text = documents(1, seed=21)[0]
    words = text.split()
    prompt, completion = " ".join(words[:40]), " " + " ".join(words[40:80])
    shuffled = " " + " ".join(sorted(words[40:80]))
    ppl, ppl_shuffled = perplexities(model, tokenizer, [prompt, prompt], [completion, shuffled])
    assert ppl < ppl_shuffled  # the demo LM knows its corpus's word order

    context = tokenizer.encode(prompt, add_special_tokens=False)
    target = tokenizer.encode(completion, add_special_tokens=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + target])).logits[0]
    logp = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
    nll = -logp[torch.arange(len(target)), torch.tensor(target)].mean()
    assert ppl == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_batched_reading_equals_one_text_at_a_time_and_similarity_falls_with_edits(tiny_lm):
    model, tokenizer, _ = tiny_lm
    texts = documents(5, seed=22)
    prompts = [" ".join(t.split()[:30]) for t in texts]
    completions = [" " + " ".join(t.split()[30 : 30 + 10 * (i + 1)]) for i, t in enumerate(texts)]
    completions[2] = ""  # nothing to read: NaN, not an error
    alone = read_texts(model, tokenizer, prompts, completions, batch_size=1)
    batched = read_texts(model, tokenizer, prompts, completions, batch_size=3)
    for (p1, v1), (p2, v2) in zip(alone, batched, strict=True):
        if v1 is None:
            assert v2 is None and math.isnan(p1) and math.isnan(p2)
            continue
        assert p1 == pytest.approx(p2, rel=1e-4) and torch.allclose(v1, v2, atol=1e-4)
    words = completions[4].split()
    edited = [" " + " ".join(words[: len(words) - k] + ["zebra"] * k) for k in (0, 10, 30)]
    vectors = [v for _, v in read_texts(model, tokenizer, [prompts[4]] * 3, edited)]
    same, some, most = (similarity(vectors[0], v) for v in vectors)
    assert same == pytest.approx(1.0) and same > some > most
    assert math.isnan(similarity(None, vectors[0]))
