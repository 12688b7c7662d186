"""ReLU cross-attention for the Perceiver: a worked plug-in variant of the sequence track.

Wortsman et al. 2023, "Replacing softmax with ReLU in Vision Transformers" (arXiv:2309.08586):
the attention weights are relu(q . k / sqrt(d)) / L over the L tokens, in place of a softmax.
A weight no longer shares one unit with the other tokens', so - like the built-in sigmoid and
unlike softmax - a latent's read grows with the number of tokens that match its query (on the
demo, the count of planted motifs); unlike sigmoid, a token that does not match weighs exactly
0 rather than 0.5. L counts the tokens that are not padding (the paper's sequence-length
scaling, per sample). ``null_key`` is ignored: a ReLU weight can already be 0.

One difference from the paper: it is the built-in sigmoid attention with only the weights
changed (``weigh``), so its values are centred on the mean token. With the paper's raw values
the read was mostly the average token and the demo's motif was not found in 10 epochs (test r2
0.09, about what the half-life features give; centred 0.72, seed 0).

Use it from the config, with nothing else changed:

    sequence:
      experiments:
        perceiver_mrna_relu:
          model: perceiver_lsai
          task: mrna
          attention: variants/sequence/relu_attention.py:ReluCrossAttention
"""

from __future__ import annotations

import torch

from workflow.sequence.models import SigmoidCrossAttention


class ReluCrossAttention(SigmoidCrossAttention):
    """Multi-head cross-attention with weights relu(q . k / sqrt(d / heads)) / L."""

    def weigh(self, scores: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        length = kept.sum(2, keepdim=True).clamp(min=1)  # L per sample, (b, 1, 1, 1)
        return torch.relu(scores) * kept.transpose(-1, -2) / length
