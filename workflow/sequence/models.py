"""Expression models: Xpresso's CNN, the published DNAPerceiver and this project's own Perceiver,
for the mrna, protein and joint tasks.

Inputs are batches from workflow.sequence.data: ``dna`` uint8 one-hot (B, W, 4), ``data``
(B, 8) half-life features, ``protein`` uint8 codes (B, P) with 0 as padding. One-hot floats
are made here, per batch.

- Xpresso (Agarwal & Shendure 2020) as its Keras code builds its best model: conv(128, k=6,
  'same') -> maxpool 30 -> conv(32, k=9, 'same') -> maxpool 10 -> flatten, concatenated with
  the half-life features -> dense 64 (ReLU, dropout) -> dense 2 (ReLU, dropout) -> output,
  Keras' glorot initialisers. Each of these is a setting (``xpresso_*``), so the demo can
  state what it changes. The protein branch is the same CNN over one-hot amino acids with
  smaller pools.
- DNAPerceiver (Stefanini et al. 2023) as published: workflow/sequence/dnaperceiver.py.
- perceiver_lsai, this project's own Perceiver design (not the paper's): a conv stem turns
  the sequence into tokens (with learned positions); ``latents`` learned queries
  cross-attend to them; the half-life features are projected to one more latent;
  ``self_layers`` transformer layers mix the latents; the mean latent gives the prediction.
  ``self_layers: 0`` is the cross-attention-only variant.
  ``attention: sigmoid`` (the default) weighs each token with its own sigmoid, so a latent's
  read counts the tokens it matches; ``softmax`` is the paper's, whose weights share one
  unit: on the demo, half the seeds then learnt motif presence but not the count. Both are
  CrossAttention subclasses; ``attention: <file>.py:<Class>`` plugs in another one
  (variants/sequence/relu_attention.py is the worked example).
  The joint model has one set of latents per sequence - DNA latents read the DNA, protein
  latents the protein - and the self-attention layers mix the two sets. (With one set reading
  both, the latents memorised the unique protein tokens and never learnt the DNA motif.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workflow.common.config import schema_defaults
from workflow.common.variants import is_variant, load_variant
from workflow.sequence.dnaperceiver import DNAPerceiver
from workflow.sequence.layout import AMINO_ACIDS, DNA, HALF_LIFE_FEATURES

N_DATA = len(HALF_LIFE_FEATURES)
N_AMINO = len(AMINO_ACIDS)

#: Every training and model setting, as the pipeline passes them (config/schema/sequence.yaml
#: $defs/sequence_train).
DEFAULTS: dict[str, Any] = schema_defaults("sequence_train")


def one_hot_dna(dna: torch.Tensor) -> torch.Tensor:
    """(B, W, 4) uint8 -> (B, 4, W) float, channels first for Conv1d."""
    return dna.float().transpose(1, 2)


def one_hot_protein(codes: torch.Tensor) -> torch.Tensor:
    """(B, P) 1-based codes -> (B, 23, P) float; padding (0) is all zero."""
    hot = F.one_hot(codes.long(), N_AMINO + 1)[..., 1:]
    return hot.float().transpose(1, 2)


class ConvBranch(nn.Module):
    """Xpresso's convolution + max-pool stack; output flattened. ``padding`` 'same' (Keras'
    split for even kernels: the extra column on the right, as PyTorch's) or 'valid'."""

    def __init__(
        self,
        channels: int,
        length: int,
        filters: list[int],
        kernels: list[int],
        pools: list[int],
        padding: str = "valid",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for out, kernel, pool in zip(filters, kernels, pools, strict=True):
            layers += [nn.Conv1d(channels, out, kernel, padding=padding), nn.ReLU(),
                       nn.MaxPool1d(pool)]  # fmt: skip
            kept = length if padding == "same" else length - kernel + 1
            channels, length = out, kept // pool
        if length < 1:
            raise ValueError("sequence too short for the Xpresso convolutions and pools")
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = channels * length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def keras_init(module: nn.Module) -> None:
    """Keras' initialisers as Xpresso's model has them: glorot_normal convolutions (its
    ``kernel_initializer``), glorot_uniform dense layers (Keras' default), zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv1d):
            nn.init.xavier_normal_(layer.weight)
        elif isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
        else:
            continue
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class Xpresso(nn.Module):
    def __init__(self, task: str, window: int, protein_length: int, s: Mapping[str, Any]) -> None:
        super().__init__()
        self.task = task
        width = 0
        padding = s["xpresso_padding"]
        if task in ("mrna", "joint"):
            self.dna = ConvBranch(
                len(DNA), window, s["xpresso_filters"], s["xpresso_kernels"], s["xpresso_pools"],
                padding,
            )  # fmt: skip
            width += self.dna.out_dim + N_DATA
        if task in ("protein", "joint"):
            self.protein = ConvBranch(
                N_AMINO, protein_length, s["xpresso_filters"], s["xpresso_kernels"],
                s["xpresso_protein_pools"], padding,
            )  # fmt: skip
            width += self.protein.out_dim
        dense, dropouts = s["xpresso_dense"], s["xpresso_dropout"]
        if len(dense) != len(dropouts):
            raise ValueError("xpresso_dense and xpresso_dropout need one entry per dense layer")
        layers: list[nn.Module] = []
        for i, (units, rate) in enumerate(zip(dense, dropouts, strict=True)):
            last = i == len(dense) - 1
            act = [] if last and not s["xpresso_last_relu"] else [nn.ReLU()]
            layers += [nn.Linear(width, units), *act, nn.Dropout(rate)]
            width = units
        self.head = nn.Sequential(*layers, nn.Linear(width, 1))
        if s["xpresso_init"] == "glorot":
            keras_init(self)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.task in ("mrna", "joint"):
            parts += [self.dna(one_hot_dna(batch["dna"])), batch["data"]]
        if self.task in ("protein", "joint"):
            parts.append(self.protein(one_hot_protein(batch["protein"])))
        return self.head(torch.cat(parts, dim=1)).squeeze(-1)


class Stem(nn.Module):
    """Conv stem: one-hot (B, C, L) -> tokens (B, L // pool, dim) with learned positions."""

    def __init__(self, channels: int, length: int, dim: int, kernel: int, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, dim, kernel, padding=kernel // 2)
        self.pool = nn.MaxPool1d(pool)
        self.positions = nn.Parameter(torch.zeros(1, max(length // pool, 1), dim))
        self.pool_size = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.pool(F.gelu(self.conv(x))).transpose(1, 2)
        return tokens + self.positions[:, : tokens.shape[1]]


class CrossAttention(nn.Module):
    """Latents reading tokens: the Perceiver's cross-attention, and the extension point of the
    ``attention`` setting (a built-in name or a plug-in variant ``<file>.py:<Class>``,
    workflow/common/variants.py).

    A variant subclasses this class and defines

    - ``__init__(self, dim: int, heads: int, null_key: bool)`` - token / latent width, number
      of heads (``dim`` is a multiple of it) and whether the experiment asks for a learned null
      key/value (a variant may ignore it); and
    - ``forward(self, query, tokens, padding=None) -> read`` - ``query`` (B, Q, D) the
      (normalised) latents, ``tokens`` (B, N, D), ``padding`` (B, N) bool, True where a token
      is padding and must not be read, or None; ``read`` (B, Q, D), what each latent adds to
      itself (the residual is outside, in Read).

    Read builds one per kind of token (DNA, protein), after its latents and norms, and feeds
    it ``padding`` as a tensor (all False for DNA), so a variant must honour the mask.
    """

    def __init__(self, dim: int, heads: int, null_key: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")

    # no forward() here: each subclass defines its own (the variant check asks for it)


class SoftmaxCrossAttention(CrossAttention):
    """The paper's softmax cross-attention (torch's MultiheadAttention); ``null_key`` adds a
    learned key/value, so a latent can attend to nothing. Weights share one unit: a read
    saturates as matching tokens add up."""

    def __init__(self, dim: int, heads: int, null_key: bool = True) -> None:
        super().__init__(dim, heads, null_key)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True, add_bias_kv=null_key)

    def forward(
        self, query: torch.Tensor, tokens: torch.Tensor, padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.attention(query, tokens, tokens, key_padding_mask=padding)[0]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # checkpoints from before CrossAttention hold the MultiheadAttention's tensors here
        for key in [k for k in state_dict if k.startswith(prefix)]:
            if not key.startswith(f"{prefix}attention."):
                state_dict[f"{prefix}attention.{key[len(prefix) :]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


class SigmoidCrossAttention(CrossAttention):
    """Cross-attention with a sigmoid weight per token (Ramapuram et al. 2024) over values
    centred on the mean token, with no bias: a latent reads the sum of the tokens that match
    its query, less the average token. The read grows with the number of matches, where
    softmax weights share one unit and saturate (a count of planted motifs then looks like
    mere presence). Centring makes the read 0 until a token stands out, and the zero bias
    (weights 0.5 at the start, not 1/n) lets that first signal through. ``null_key`` is
    ignored (a sigmoid weight can already be 0)."""

    def __init__(self, dim: int, heads: int, null_key: bool = True) -> None:
        super().__init__(dim, heads, null_key)
        self.heads = heads
        self.query, self.key_value = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, query: torch.Tensor, tokens: torch.Tensor, padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        (b, q, d), n, h = query.shape, tokens.shape[1], self.heads
        queries = self.query(query).view(b, q, h, d // h).transpose(1, 2)
        keys, values = self.key_value(tokens).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        kept = torch.ones(b, n, device=tokens.device) if padding is None else (~padding).float()
        kept = kept[:, None, :, None]  # (b, 1, n, 1) against values (b, h, n, d / h)
        mean = (values * kept).sum(2, keepdim=True) / kept.sum(2, keepdim=True).clamp(min=1)
        weights = self.weigh(queries @ keys.transpose(-1, -2) / math.sqrt(d // h), kept)
        read = weights @ ((values - mean) * kept)
        return self.out(read.transpose(1, 2).reshape(b, q, d))

    def weigh(self, scores: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Each token's weight from its scaled score (b, h, q, n); ``kept`` (b, 1, n, 1) is 1
        for a token, 0 for padding. A variant that changes only the weights overrides this."""
        return torch.sigmoid(scores) * kept.transpose(-1, -2)


#: The built-in cross-attentions, by the ``attention`` setting's name.
ATTENTIONS: dict[str, type[CrossAttention]] = {
    "softmax": SoftmaxCrossAttention,
    "sigmoid": SigmoidCrossAttention,
}


def attention_class(attention: str) -> type[CrossAttention]:
    """A built-in cross-attention by name, or the plug-in variant ``attention`` names
    (``file.py:Class``, a CrossAttention that defines ``forward``)."""
    if is_variant(attention):
        return load_variant("sequence", "attention", attention)
    if attention not in ATTENTIONS:
        raise ValueError(
            f"attention must be one of {tuple(ATTENTIONS)} or <file>.py:<Class>, got {attention!r}"
        )
    return ATTENTIONS[attention]


class Read(nn.Module):
    """Learned latents reading one kind of token: cross-attention, then a feed-forward layer.
    ``attention`` names the CrossAttention: ``softmax`` (``null_key`` adds a learned key/value,
    so a latent can attend to nothing), ``sigmoid`` (SigmoidCrossAttention: reads that count)
    or a plug-in variant ``<file>.py:<Class>``."""

    def __init__(self, latents: int, dim: int, heads: int, null_key: bool, attention: str) -> None:
        super().__init__()
        cross = attention_class(attention)
        self.token_bias = nn.Parameter(torch.zeros(dim))  # which kind of token (joint)
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = cross(dim, heads, null_key)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )

    def forward(
        self,
        tokens: torch.Tensor,
        padding: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kv = self.norm_kv(tokens + self.token_bias)
        query = self.latents.expand(len(kv), -1, -1)
        if extra is not None:
            query = torch.cat([query, extra], dim=1)
        z = query + self.cross(self.norm_q(query), kv, padding)
        return z + self.ff(z)


class Perceiver(nn.Module):
    def __init__(self, task: str, window: int, protein_length: int, s: Mapping[str, Any]) -> None:
        super().__init__()
        self.task, dim = task, int(s["dim"])
        uses_dna, uses_protein = task in ("mrna", "joint"), task in ("protein", "joint")
        if uses_dna:
            self.dna = Stem(len(DNA), window, dim, s["stem_kernel"], s["stem_pool"])
            self.data = nn.Linear(N_DATA, dim)
        if uses_protein:
            self.protein = Stem(N_AMINO, protein_length, dim, 5, s["protein_pool"])
        read = (int(s["latents"]), dim, int(s["heads"]), bool(s["null_key"]), s["attention"])
        self.read_dna = Read(*read) if uses_dna else None
        self.read_protein = Read(*read) if uses_protein else None
        layer = nn.TransformerEncoderLayer(
            dim, int(s["heads"]), 2 * dim, float(s["dropout"]), batch_first=True, norm_first=True
        )
        self.mix = (
            nn.TransformerEncoder(layer, int(s["self_layers"]), enable_nested_tensor=False)
            if int(s["self_layers"])
            else nn.Identity()
        )
        self.head = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1)
        )

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        latents = []
        if self.read_dna is not None:
            dna = self.dna(one_hot_dna(batch["dna"]))
            unpadded = torch.zeros(dna.shape[:2], dtype=torch.bool, device=dna.device)
            latents.append(self.read_dna(dna, unpadded, self.data(batch["data"])[:, None]))
        if self.read_protein is not None:
            codes = batch["protein"]
            protein = self.protein(one_hot_protein(codes))
            pool = self.protein.pool_size
            present = codes[:, : protein.shape[1] * pool].reshape(len(codes), -1, pool) > 0
            latents.append(self.read_protein(protein, padding=~present.any(-1)))
        z = self.mix(torch.cat(latents, dim=1))
        return self.head(z.mean(dim=1)).squeeze(-1)


class Composition(nn.Module):
    """Protein level from amino-acid composition alone: a linear model on the residue
    frequencies and log10 length. The baseline a protein-sequence model has to beat, since
    composition alone explains part of abundance (the demo plants a (K+R)-(D+E) term)."""

    def __init__(self, task: str, window: int, protein_length: int, s: Mapping[str, Any]) -> None:
        super().__init__()
        if task != "protein":
            raise ValueError(f"model composition serves the protein task only, not {task!r}")
        self.linear = nn.Linear(N_AMINO + 1, 1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        counts = one_hot_protein(batch["protein"]).sum(dim=2)  # (B, 23)
        length = counts.sum(dim=1, keepdim=True).clamp(min=1)
        frequencies = counts / length * N_AMINO  # about 1 each: one step size suits all
        return self.linear(torch.cat([frequencies, torch.log10(length)], dim=1)).squeeze(-1)


def build_model(settings: Mapping[str, Any], window: int, protein_length: int) -> nn.Module:
    s = {**DEFAULTS, **settings}
    for key, default in DEFAULTS.items():  # a partial nested block keeps the other defaults
        if isinstance(default, dict):
            s[key] = {**default, **(settings.get(key) or {})}
    models = {
        "xpresso": Xpresso, "perceiver_lsai": Perceiver, "dnaperceiver": DNAPerceiver,
        "composition": Composition,
    }  # fmt: skip
    if s["model"] not in models:
        raise ValueError(f"model must be one of {sorted(models)}, got {s['model']!r}")
    return models[s["model"]](s["task"], window, protein_length, s)
