"""Seeding schemes and green lists, bit-compatible with the reference code of Kirchenbauer et al.

The reference is github.com/jwkirchenbauer/lm-watermarking (``extended_watermark_processor.py``
and ``alternative_prf_schemes.py``). Our two schemes equal its seeding-scheme strings:

* ``lefthash`` = ``"lefthash"`` = ``"simple_1"`` = ``"ff-additive_prf-1-False-15485863"``:
  the seed is ``key * previous token id``.
* ``selfhash`` = ``"selfhash"`` = ``"algorithm-3"`` = ``"ff-anchored_minhash_prf-4-True-15485863"``:
  the PRF sees the 3 previous tokens plus the candidate token itself (context width 4 counts
  the candidate, since the reference appends it before taking the last 4 ids) and returns
  ``min_i key * hashint(x_i) * hashint(x_candidate)`` in wrapping int64 arithmetic.

``hashint`` is the reference's ``hashint``: a lookup in a fixed permutation of 1,000,003
integers drawn by ``torch.randperm`` from a CPU generator seeded with 2971215073, plus one. (The
reference also holds a Jenkins-style avalanche hash, ``_hashint_avalanche_*``, but no scheme
calls it.)

A seeding scheme is a :class:`SeedingScheme` (the track's plug-in point): ``scheme: lefthash``
or ``selfhash`` picks a built-in, ``scheme: <file>.py:<Class>`` a subclass outside the package
(workflow/common/variants.py; worked example variants/watermark/skipgram.py).

The green list of a seed is the first ``int(gamma * vocab_size)`` ids of ``torch.randperm``
from a generator seeded with ``seed % (2**64 - 1)`` (the reference's ``select_green_tokens=True``).
The reference draws on the model's device, and CUDA and CPU generators give different
permutations; we always draw CPU lists (on a GPU, randperm.py draws the same ones there, for
many seeds at once) so that GPU generation and CPU detection agree. Text
watermarked by the reference on a GPU is therefore not detected here (nor by the reference on
a CPU), and green lists may change if a torch release changes ``randperm``.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch

from workflow.common.errors import InputError, first_line
from workflow.common.variants import Variant, is_variant, load_variant
from workflow.watermark.randperm import green_masks as vectorised_masks
from workflow.watermark.randperm import randperm_prefix

DEFAULT_KEY = 15485863
HASH_TABLE_SEED = 2971215073  # the reference's "fib47 is prime"
HASH_TABLE_SIZE = 1_000_003
SEED_MODULUS = 2**64 - 1  # the reference's guard before Generator.manual_seed
MASK_CACHE_SIZE = 2048  # masks are vocab_size bytes each: about 100 MB for a 50k vocabulary


class SeedingScheme:
    """How a token's context becomes the seed of its green list: the extension point of a
    plug-in variant (``scheme: <file>.py:<Class>``, workflow/common/variants.py).

    A subclass sets two class attributes and defines one method:

    * ``context_width`` (int): the ids the PRF reads per scored token; with ``self_salt`` the
      candidate token itself is the last of them (so the token needs ``context_width - 1``
      previous tokens, :attr:`lookback`), without it they are the ``context_width`` previous
      tokens.
    * ``self_salt`` (bool): whether the candidate salts its own seed (Algorithm 3 of the paper;
      generation then checks the likeliest candidates one by one, see processor.py).
    * ``seeds(self, windows, key) -> seeds``: ``windows`` an int64 CPU tensor of shape
      ``(..., context_width)``, oldest id first; ``key`` the run's hash key (an int). Returns an
      int64 tensor of shape ``windows.shape[:-1]``: the seeds, before the ``2**64 - 1`` modulo.
      It must be a pure function of the window and the key (generation and detection call it
      on different batches), vectorised over the leading dimensions.

    The workflow builds a variant as ``Class(name=<its spec>)``; a subclass with parameters of
    its own gives them defaults. ``prf`` names the reference's PRF, when the scheme is one of
    its ``ff-<prf>-<width>-<self_salt>-<key>`` schemes (:meth:`reference_name`).
    """

    context_width: ClassVar[int] = 1
    self_salt: ClassVar[bool] = False
    prf: ClassVar[str | None] = None

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        width = self.context_width
        if not isinstance(width, int) or isinstance(width, bool) or width < int(self.self_salt):
            raise ValueError(f"{self.name}: context_width must be an int >= "
                             f"{int(self.self_salt)}, got {width!r}")  # fmt: skip
        if not isinstance(self.self_salt, bool):
            raise ValueError(f"{self.name}: self_salt must be a bool, got {self.self_salt!r}")

    # no seeds() here: the variant check (load_variant) requires a subclass to define it

    @property
    def lookback(self) -> int:
        """Previous tokens a scored token needs (the candidate is not 'previous')."""
        return self.context_width - int(self.self_salt)

    def reference_name(self, key: int = DEFAULT_KEY) -> str:
        """The reference's free-form seeding-scheme string for this scheme and key."""
        if self.prf is None:
            raise ValueError(f"{self.name} is not one of the reference's PRF schemes")
        return f"ff-{self.prf}-{self.context_width}-{self.self_salt}-{key}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, "
                f"context_width={self.context_width}, self_salt={self.self_salt})")  # fmt: skip


class LeftHash(SeedingScheme):
    """The reference's ``lefthash`` (``ff-additive_prf-1-False``): ``key * previous id``."""

    context_width = 1
    self_salt = False
    prf = "additive_prf"

    def seeds(self, windows: torch.Tensor, key: int) -> torch.Tensor:
        return key * windows.sum(dim=-1)


class SelfHash(SeedingScheme):
    """The reference's ``selfhash`` (``ff-anchored_minhash_prf-4-True``): the min over the
    window of ``key * hashint(x_i) * hashint(x_candidate)``, in wrapping int64 arithmetic."""

    context_width = 4
    self_salt = True
    prf = "anchored_minhash_prf"

    def seeds(self, windows: torch.Tensor, key: int) -> torch.Tensor:
        hashed = hashint(windows)
        # int64 products wrap around exactly as in the reference's tensor arithmetic
        return (key * hashed * hashed[..., -1:]).amin(dim=-1)


class Unigram(SeedingScheme):
    """Zhao et al. 2023 (Unigram-Watermark): one green list for every position, seeded by the
    key alone - no context to lose to an edit, so the most robust to rewrites, and the easiest
    to learn from outputs. Their code shuffles a numpy mask seeded by a hash of the key; here
    the list is torch's permutation of the key as the other schemes draw theirs, so only the
    list differs, not its statistics. Their detector counts each distinct token once: set
    ``detect.ignore_repeated_ngrams`` (n-grams of one token here) to do the same."""

    context_width = 0
    self_salt = False

    def seeds(self, windows: torch.Tensor, key: int) -> torch.Tensor:
        return torch.full(windows.shape[:-1], key, dtype=torch.long)


SCHEMES: dict[str, SeedingScheme] = {
    "lefthash": LeftHash("lefthash"),
    "selfhash": SelfHash("selfhash"),
    "unigram": Unigram("unigram"),
}


def scheme(name: str | SeedingScheme) -> SeedingScheme:
    """A built-in scheme by name, or the plug-in variant ``name`` names (``<file>.py:<Class>``,
    a SeedingScheme that defines ``seeds``), built; a typo must fail loudly, not detect nothing."""
    if isinstance(name, SeedingScheme):
        return name
    if is_variant(name):
        return _variant(name)
    if name not in SCHEMES:
        known = ", ".join(SCHEMES)
        raise ValueError(f"unknown seeding scheme {name!r} (known: {known}), nor a plug-in "
                         "<file>.py:<Class>")  # fmt: skip
    return SCHEMES[name]


@functools.cache
def _variant(spec: str) -> SeedingScheme:
    """The plug-in scheme ``spec`` names, built once per process; a class that cannot be
    built is an error naming its file."""
    cls = load_variant("watermark", "scheme", spec)
    try:
        return cls(name=spec)
    except (TypeError, ValueError) as err:
        path = Variant.parse(spec).path
        raise InputError(path, f"cannot build {cls.__name__}: {first_line(err)}") from None


def check_gamma(gamma: float) -> None:
    """gamma outside (0, 1) makes the z-score's variance zero or negative."""
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must lie strictly between 0 and 1, got {gamma}")


def greenlist_size(vocab_size: int, gamma: float) -> int:
    """Number of green ids; truncation (not rounding) as in the reference."""
    return int(vocab_size * gamma)


@functools.cache
def hash_table() -> torch.Tensor:
    """The reference's fixed permutation table, built once (about 8 MB)."""
    rng = torch.Generator(device="cpu")
    rng.manual_seed(HASH_TABLE_SEED)
    return torch.randperm(HASH_TABLE_SIZE, generator=rng)


def hashint(values: torch.Tensor) -> torch.Tensor:
    """Reference ``hashint``: table lookup with a floor modulo, so negative ids hash too."""
    return hash_table()[values.cpu().long() % HASH_TABLE_SIZE] + 1


def prf_seeds(windows: torch.Tensor, sch: SeedingScheme, key: int = DEFAULT_KEY) -> torch.Tensor:
    """Seeds (int64, before the 2**64-1 modulo) for PRF inputs ``windows[..., context_width]``."""
    windows = windows.cpu().long()
    if windows.shape[-1] != sch.context_width:
        raise ValueError(f"{sch.name} needs windows of {sch.context_width} ids")
    seeds = sch.seeds(windows, key)
    if not isinstance(seeds, torch.Tensor) or seeds.dtype != torch.long:
        got = seeds.dtype if isinstance(seeds, torch.Tensor) else type(seeds).__name__
        raise ValueError(f"{sch.name}: seeds() must return an int64 tensor, got {got}")
    if seeds.shape != windows.shape[:-1]:
        want, got = tuple(windows.shape[:-1]), tuple(seeds.shape)
        raise ValueError(f"{sch.name}: seeds() of windows {tuple(windows.shape)} must have "
                         f"shape {want}, got {got}")  # fmt: skip
    return seeds


def green_list(seed: int, vocab_size: int, gamma: float) -> torch.Tensor:
    """Green ids of a seed, in permutation order."""
    rng = torch.Generator(device="cpu")  # CPU always: see the module docstring
    rng.manual_seed(int(seed) % SEED_MODULUS)
    return torch.randperm(vocab_size, generator=rng)[: greenlist_size(vocab_size, gamma)]


@functools.lru_cache(maxsize=MASK_CACHE_SIZE)
def _cached_mask(seed: int, vocab_size: int, gamma: float) -> torch.Tensor:
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[green_list(seed, vocab_size, gamma)] = True
    return mask


def green_mask(seed: int, vocab_size: int, gamma: float) -> torch.Tensor:
    """Boolean green mask over the vocabulary, LRU-cached: callers must not modify it."""
    return _cached_mask(int(seed), int(vocab_size), float(gamma))


def is_green(
    seeds: torch.Tensor,
    targets: torch.Tensor,
    vocab_size: int,
    gamma: float,
    vectorised: bool = False,
) -> torch.Tensor:
    """Whether each target is green under its seed; one permutation per unique seed.

    Ids outside the vocabulary (e.g. padding rows of a model's output layer) are never green.
    ``vectorised`` draws the same lists for all seeds at once on the seeds' device
    (randperm.py): the fast way on a GPU, where one ``randperm`` per seed would cross to the CPU.
    """
    if vectorised:
        return _is_green_vectorised(seeds, targets, vocab_size, gamma)
    shape = seeds.shape
    seeds, targets = seeds.reshape(-1).cpu(), targets.reshape(-1).cpu().long()
    out = torch.zeros(seeds.numel(), dtype=torch.bool)
    if seeds.numel() == 0:
        return out.reshape(shape)
    in_vocab = (targets >= 0) & (targets < vocab_size)
    safe_targets = targets.clamp(0, vocab_size - 1)
    unique, inverse = torch.unique(seeds, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    stops = torch.bincount(inverse, minlength=unique.numel()).cumsum(0).tolist()
    start = 0
    for seed, stop in zip(unique.tolist(), stops, strict=True):
        rows = order[start:stop]
        out[rows] = green_mask(seed, vocab_size, gamma)[safe_targets[rows]]
        start = stop
    return (out & in_vocab).reshape(shape)


def _is_green_vectorised(
    seeds: torch.Tensor, targets: torch.Tensor, vocab_size: int, gamma: float
) -> torch.Tensor:
    targets = targets.to(seeds.device).long()
    unique, inverse = torch.unique(seeds.reshape(-1), return_inverse=True)
    green = randperm_prefix(unique, vocab_size, greenlist_size(vocab_size, gamma))
    hits = (green[inverse] == targets.reshape(-1, 1)).any(dim=-1)
    return hits.reshape(seeds.shape)  # an id outside the vocabulary is in no list


def green_masks(
    seeds: torch.Tensor,
    vocab_size: int,
    gamma: float,
    vectorised: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(..., vocab_size) green masks of int64 ``seeds`` on ``device`` (default: the seeds'):
    each unique seed's drawn once, on the CPU (cached) or, ``vectorised``, all at once there."""
    device = seeds.device if device is None else torch.device(device)
    unique, inverse = torch.unique(seeds.reshape(-1), return_inverse=True)
    if vectorised:
        masks = vectorised_masks(unique.to(device), vocab_size, greenlist_size(vocab_size, gamma))
    else:
        masks = torch.stack([green_mask(seed, vocab_size, gamma) for seed in unique.tolist()])
        masks = masks.to(device)
    return masks[inverse.to(device)].reshape(*seeds.shape, vocab_size)


def ngrams(ids: torch.Tensor, sch: SeedingScheme) -> torch.Tensor:
    """Rows ``ids[t - lookback : t + 1]`` for every t >= lookback: context then scored token."""
    ids = ids.cpu().long()
    width = sch.lookback + 1
    if ids.numel() < width:
        return torch.empty((0, width), dtype=torch.long)
    return ids.unfold(0, width, 1)


def prf_inputs(rows: torch.Tensor, sch: SeedingScheme) -> torch.Tensor:
    """PRF windows of n-gram rows: self-salted schemes include the scored token itself."""
    return rows if sch.self_salt else rows[..., :-1]
