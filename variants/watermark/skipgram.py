"""Skip-gram seeding: a worked plug-in variant of the watermark track.

The built-in ``lefthash`` seeds the green list of token t from the token right before it
(``key * x[t-1]``). This scheme seeds it from the farthest token of a context of width
``context_width`` = w, hashed: ``seed = hashint(key * x[t-w])`` - the ``skipgram_prf`` of the
reference code (github.com/jwkirchenbauer/lm-watermarking, ``alternative_prf_schemes.py``; its
``skipgram`` alias is w = 5, and this class equals its ``ff-skipgram_prf-5-False-<key>``),
studied in Kirchenbauer et al. 2023, "On the Reliability of Watermarks for Large Language
Models" (arXiv:2306.04634).

Why: a green list no longer depends on the token just before, so the watermark does not
fight a language's tight bigrams ("New" -> "York"), and counting bigrams of watermarked text
does not reveal the green lists (an attacker must count pairs w apart). A substitution still
changes the green/red status of at most two tokens (itself and the one w later), as with
lefthash; but an insertion or deletion shifts the window of the next w tokens, so edits that
change the length hurt it w times more. On the demo (seed 0, T = 200): mean z 14.6 (lefthash
14.1), oracle perplexity of marked text 18.4 (lefthash 21.2, unmarked 15.9), and after 10 %
deletions z 8.0 (lefthash 12.0).

Use it from the config, with nothing else changed:

    watermark:
      experiments:
        kgw_skipgram: {scheme: variants/watermark/skipgram.py:SkipGram}
"""

from __future__ import annotations

import torch

from workflow.watermark.greenlist import SeedingScheme, hashint


class SkipGram(SeedingScheme):
    """The green list of a token from the token ``context_width`` places before it."""

    context_width = 5  # w: the reference's "skipgram"; any w >= 1 works (w = 1: hashed lefthash)
    self_salt = False
    prf = "skipgram_prf"  # reference_name() -> "ff-skipgram_prf-5-False-15485863"

    def seeds(self, windows: torch.Tensor, key: int) -> torch.Tensor:
        # windows[..., 0] is the oldest id; key * id wraps around in int64, as in the reference
        return hashint(key * windows[..., 0])
