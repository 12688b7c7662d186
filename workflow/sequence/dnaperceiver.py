"""DNAPerceiver (Stefanini et al. 2023, github.com/MatteoStefanini/DNAPerceiver) as published.

Every base of the window is a token: an embedding (size 32) plus a sinusoidal position table
that is learnt from there on; N and padding (token 0) are masked out of the attention. 128
latents of width 128, each with the 8 half-life features appended (width 136), read the bases
with one cross-attention (1 head of 64) and a GEGLU feed-forward, then mix with one
self-attention layer (8 heads of 16) and its feed-forward, dropout 0.2 throughout. A decoder
query comes from an Enformer-like tower over the one-hot window (conv 15 -> residual conv
block -> attention pool 12, then two conv blocks narrowing 64 -> 46 -> 32 channels, each with
an attention pool of 6), flattened with the half-life features through dense 64 + ReLU; it
cross-attends to the latents, and a linear layer gives the prediction.

The attention, pre-norm and feed-forward blocks are perceiver-pytorch's (the library the
reference copied them from), and every parameter keeps the reference's name and shape, so a
state dict of its ``DNAPerceiver`` loads into :class:`DNAPerceiver` as it is (the settings'
defaults are its ``main_DNAPerceiver.py`` defaults). Two things differ, neither in the maths:
the dense layer after the tower is sized up front (the reference's is lazy), and the input is
the pipeline's one-hot window (A, C, G, T; N all zero), turned here into the reference's tokens
(A 1, T 2, C 3, G 4; 0 for N and padding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from einops.layers.torch import Rearrange
from perceiver_pytorch.perceiver_pytorch import Attention, FeedForward, PreNorm
from torch import nn

#: Reference token of each one-hot channel (A, C, G, T): its ``tokenize`` maps P A T C G -> 0..4.
TOKEN_OF_CHANNEL = (1, 3, 4, 2)
N_TOKENS = 5
N_HALF_LIFE = 8


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sine / cosine table, sines in the even columns, position 0 zeroed (the
    reference's ``sinusoid_encoding_table(max_len, dim, padding_idx=0)``)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = 10000 ** (2 * torch.arange(dim // 2, dtype=torch.float32)[None] / dim)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position / frequency)
    table[:, 1::2] = torch.cos(position / frequency)
    table[0] = 0
    return table


class SigmoidGELU(nn.Module):
    """Enformer's GELU approximation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(1.702 * x) * x


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def conv_block(dim: int, out: int | None = None, kernel: int = 1) -> nn.Sequential:
    """Batch norm -> GELU -> 'same' convolution, as Enformer's ConvBlock."""
    return nn.Sequential(
        nn.BatchNorm1d(dim), SigmoidGELU(), nn.Conv1d(dim, out or dim, kernel, padding=kernel // 2)
    )


class AttentionPool(nn.Module):
    """Enformer's attention pooling: a softmax over each window of ``pool`` positions, with
    per-channel logits from a learnt (dim, dim) map starting at the identity. As the
    reference, a length that is not a multiple of ``pool`` loses its last positions."""

    def __init__(self, dim: int, pool: int) -> None:
        super().__init__()
        self.pool_size = pool
        self.to_attn_logits = nn.Parameter(torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, n = x.shape
        x = x[:, :, : n - n % self.pool_size]
        logits = torch.einsum("bdn,de->ben", x, self.to_attn_logits)
        x = x.reshape(b, d, -1, self.pool_size)
        weights = logits.reshape(b, d, -1, self.pool_size).softmax(dim=-1)
        return (x * weights).sum(dim=-1)


def tower_block(dim: int, out: int, pool: int) -> nn.Sequential:
    """One block of the tower: conv 5 to ``out`` channels, a residual 1 x 1 conv, a pool."""
    return nn.Sequential(
        conv_block(dim, out, 5), Residual(conv_block(out, out)), AttentionPool(out, pool)
    )


def tower_widths(start: int, end: int, count: int, divisible_by: int = 2) -> list[int]:
    """Enformer's ``exponential_linspace_int``: ``count`` widths from ``start`` to ``end`` on a
    geometric scale, each rounded to a multiple of ``divisible_by``."""
    base = math.exp(math.log(end / start) / (count - 1))
    return [int(round(start * base**i / divisible_by) * divisible_by) for i in range(count)]


class PerceiverCore(nn.Module):
    """The reference's ``Perceiver_inner`` for DNA (attribute names kept: they are the state
    dict's keys)."""

    def __init__(self, window: int, s: Mapping[str, Any]) -> None:
        super().__init__()
        dim, latent_dim, queries = int(s["embedding"]), int(s["latent_dim"]), int(s["queries_dim"])
        dropout, pool = float(s["dropout"]), int(s["attention_pool"])
        self.latents = nn.Parameter(torch.randn(int(s["latents"]), latent_dim))
        latent_head = latent_dim // int(s["latent_heads"])
        width = latent_dim + N_HALF_LIFE  # each latent carries the half-life features
        cross = int(s["cross_heads"]), int(s["cross_dim_head"])
        self.layers = nn.ModuleList()
        for _ in range(int(s["depth"])):
            mixing = nn.ModuleList(
                nn.ModuleList(
                    [
                        PreNorm(
                            width,
                            Attention(
                                width,
                                heads=int(s["latent_heads"]),
                                dim_head=latent_head,
                                dropout=dropout,
                            ),
                        ),
                        PreNorm(width, FeedForward(width, mult=2, dropout=dropout)),
                    ]
                )  # fmt: skip
                for _ in range(int(s["self_per_cross"]))
            )
            self.layers.append(
                nn.ModuleList(
                    [
                        PreNorm(
                            width,
                            Attention(
                                width, dim, heads=cross[0], dim_head=cross[1], dropout=dropout
                            ),
                            context_dim=dim,
                        ),
                        PreNorm(width, FeedForward(width, mult=2, dropout=dropout)),
                        mixing,
                    ]
                )  # fmt: skip
            )
        self.decoder_cross_attn = PreNorm(
            queries, Attention(queries, width, heads=cross[0], dim_head=cross[1]), context_dim=width
        )
        self.stem = nn.Sequential(
            Rearrange("b n d -> b d n"),
            nn.Conv1d(4, queries, 15, padding=7),
            Residual(conv_block(queries)),
            AttentionPool(queries, pool),
        )
        widths = tower_widths(queries, queries // 2, int(s["downsamples"]) - 1)
        self.conv_tower = nn.Sequential(
            *(tower_block(a, b, pool // 2) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        length = window // pool
        for _ in widths[1:]:
            length //= pool // 2
        if length < 1:
            raise ValueError(f"a window of {window} bp is too short for DNAPerceiver's tower")
        self.dense1 = nn.Linear(widths[-1] * length + N_HALF_LIFE, queries)
        self.dropout1 = nn.Dropout(dropout)
        self.to_score = nn.Linear(queries, 1)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, one_hot: torch.Tensor, data: torch.Tensor
    ) -> torch.Tensor:
        x = self.latents.expand(len(tokens), -1, -1)
        x = torch.cat([x, data[:, None].expand(-1, x.shape[1], -1)], dim=-1)
        for cross_attn, cross_ff, mixing in self.layers:
            x = cross_attn(x, context=tokens, mask=mask) + x
            x = cross_ff(x) + x
            for self_attn, self_ff in mixing:
                x = self_attn(x) + x
                x = self_ff(x) + x
        query = self.conv_tower(self.stem(one_hot)).flatten(1)
        query = self.dropout1(torch.relu(self.dense1(torch.cat([query, data], dim=-1))))
        read = self.decoder_cross_attn(query[:, None], context=x)[:, 0] + query
        return self.to_score(read)[:, 0]


class DNAPerceiver(nn.Module):
    """The reference's ``DNAPerceiver`` on the pipeline's batches (``dna`` (B, W, 4) one-hot,
    ``data`` (B, 8)), for the mrna task."""

    def __init__(self, task: str, window: int, protein_length: int, s: Mapping[str, Any]) -> None:
        super().__init__()
        if task != "mrna":
            raise ValueError(f"model dnaperceiver serves the mrna task only, not {task!r}")
        p = s["dnaperceiver"]
        dim = int(p["embedding"])
        self.token_emb = nn.Embedding(N_TOKENS, dim)
        self.dropout_emb = nn.Dropout(float(p["dropout"]))
        if p["positions"] == "learned":
            self.pos_emb = nn.Embedding(window, dim)
        else:
            table = sinusoid_table(window, dim)
            self.pos_emb = nn.Embedding.from_pretrained(table, freeze=p["positions"] == "sin_fixed")
        self.perceiver = PerceiverCore(window, p)
        self.register_buffer("token_of_channel", torch.tensor(TOKEN_OF_CHANNEL), persistent=False)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        dna = batch["dna"]
        one_hot = dna.float()
        tokens = (dna.long() * self.token_of_channel).sum(-1)  # 0 where no channel is set (N)
        x = self.dropout_emb(self.token_emb(tokens))
        x = x + self.pos_emb.weight[None, : x.shape[1]]
        return self.perceiver(x, tokens != 0, one_hot, batch["data"].float())
