"""torch's CPU ``randperm``, its first k ids, for many seeds at once and on any device.

A green list is the first ``int(gamma * V)`` ids of ``torch.randperm(V)`` drawn by a CPU
generator seeded with the list's seed (greenlist.py). torch draws that permutation with a
Mersenne Twister (MT19937 seeded with the seed's low 32 bits) and a Fisher-Yates shuffle: step
i swaps positions i and ``j_i = i + draw_i mod (V - i)``. One seed at a time that is V
sequential steps on the CPU, and a self-salted scheme needs a list per candidate token (40 per
row at every generation step). Here the same lists come from tensor ops over a batch of seeds:

1. The MT19937 streams: one 624-word state per seed, each twist in the four blocks whose words
   depend only on words already computed (the recurrence reads 1 and 397 words ahead).
2. The shuffle's first k steps, not run in order. After step i, position i is final: it holds
   what position ``j_i`` held just before - what the last earlier step aimed at ``j_i`` moved
   there, or ``j_i`` itself if none did. What step t moved is what position t held before step
   t, found the same way. These "last earlier step" links form chains, which pointer jumping
   resolves in log2(k) rounds; the links themselves come from one sort of (target, step).

``tests/watermark/test_watermark_randperm.py`` checks every list against ``torch.randperm``
and the raw stream against numpy's MT19937.
"""

from __future__ import annotations

import torch

N, M = 624, 397  # MT19937's state words and its recurrence's reach
MATRIX_A, UPPER, LOWER, WORD = 0x9908B0DF, 0x80000000, 0x7FFFFFFF, 0xFFFFFFFF


def low_words(seeds: torch.Tensor) -> torch.Tensor:
    """The 32 bits MT19937 is seeded with: those of ``int(seed) % (2**64 - 1)`` (the
    reference's guard before ``manual_seed``), from int64 seeds. A negative seed s is
    ``s + 2**64 - 1`` there, whose low 32 bits are those of ``s - 1`` (int64 wraps alike)."""
    seeds = seeds.long()
    return torch.where(seeds < 0, seeds - 1, seeds) & WORD


def initial_states(words: torch.Tensor) -> torch.Tensor:
    """(B, 624) MT19937 states of ``init_genrand(word)``: 623 steps, each over all seeds."""
    state = torch.empty((*words.shape, N), dtype=torch.long, device=words.device)
    x = words.long() & WORD
    state[..., 0] = x
    for j in range(1, N):  # products stay below 2**63: x < 2**32, the factor < 2**31
        x = (1812433253 * (x ^ (x >> 30)) + j) & WORD
        state[..., j] = x
    return state


def twist(mt: torch.Tensor) -> torch.Tensor:
    """The next state: word i from words i, i + 1 and i + 397 (mod 624), the later ones new
    once the recurrence wraps: four blocks, each needing only words computed before it."""
    new = torch.empty_like(mt)

    def block(lo: int, hi: int, following: torch.Tensor, far: torch.Tensor) -> None:
        y = (mt[..., lo:hi] & UPPER) | (following & LOWER)
        new[..., lo:hi] = far ^ (y >> 1) ^ ((y & 1) * MATRIX_A)

    block(0, N - M, mt[..., 1 : N - M + 1], mt[..., M:])
    block(N - M, 2 * (N - M), mt[..., N - M + 1 : 2 * (N - M) + 1], new[..., : N - M])
    block(2 * (N - M), N - 1, mt[..., 2 * (N - M) + 1 :], new[..., N - M : M - 1])
    block(N - 1, N, new[..., :1], new[..., M - 1 : M])
    return new


def temper(y: torch.Tensor) -> torch.Tensor:
    y = y ^ (y >> 11)
    y = y ^ ((y << 7) & 0x9D2C5680)
    y = y ^ ((y << 15) & 0xEFC60000)
    return y ^ (y >> 18)


def mt19937(words: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count) first 32-bit outputs (as int64) of MT19937 seeded with each word."""
    state, out = initial_states(words), []
    for _ in range(-(-count // N)):
        state = twist(state)
        out.append(temper(state))
    return torch.cat(out, dim=-1)[..., :count]


def randperm_prefix(seeds: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """(B, k): ``torch.randperm(n, generator=CPU generator seeded with seed % (2**64 - 1))[:k]``
    for each int64 seed of ``seeds`` (B,), computed on the seeds' device; 0 <= k < n."""
    if not 0 <= k < n:
        raise ValueError(f"need 0 <= k < n, got k={k}, n={n}")
    batch, device = seeds.shape[0], seeds.device
    if k == 0:
        return torch.empty((batch, 0), dtype=torch.long, device=device)
    steps = torch.arange(k, device=device)
    target = steps + mt19937(low_words(seeds), k) % (n - steps)  # j_i, in [i, n)
    # every step sorted by (target, step): equal targets adjacent, earlier steps first
    keys, _ = torch.sort(target * k + steps, dim=-1)
    sorted_target, sorted_step = keys // k, keys % k
    none = torch.full_like(sorted_step[..., :1], -1)
    # last earlier step aimed at the same target as step i (-1: none)
    same = sorted_target[..., 1:] == sorted_target[..., :-1]
    earlier = torch.where(same, sorted_step[..., :-1], -1)
    last_same = torch.empty_like(target).scatter_(
        -1, sorted_step, torch.cat([none, earlier], dim=-1)
    )
    # last step before t aimed at position t: the sorted entry just below (t, t)
    below = torch.searchsorted(keys, steps.expand(batch, k) * (k + 1)) - 1
    found = below.clamp(min=0)
    aimed = (below >= 0) & (sorted_target.gather(-1, found) == steps)
    link = torch.where(aimed, sorted_step.gather(-1, found), steps.expand(batch, k))
    # what position t held before step t: follow the links to a step nothing aimed at before
    for _ in range(max(1, (k - 1).bit_length())):
        link = link.gather(-1, link)
    moved = link  # the root's own position is its original id
    return torch.where(last_same >= 0, moved.gather(-1, last_same.clamp(min=0)), target)


def green_masks(seeds: torch.Tensor, vocab_size: int, green: int) -> torch.Tensor:
    """(B, vocab_size) bool: the first ``green`` ids of each seed's permutation."""
    ids = randperm_prefix(seeds.reshape(-1), vocab_size, green)
    mask = torch.zeros((ids.shape[0], vocab_size), dtype=torch.bool, device=seeds.device)
    return mask.scatter_(-1, ids, True).reshape(*seeds.shape, vocab_size)
