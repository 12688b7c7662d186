"""The demo's own causal LM: a byte-level BPE tokenizer and a small GPT-2 trained on the shared
scaffold, published as a Hugging Face model folder.

The watermark pipeline loads every model with ``AutoModelForCausalLM`` / ``AutoTokenizer`` from
a folder, so the demo model is saved exactly like a downloaded OPT or Llama folder and nothing
downstream knows it was trained here. Training goes through :func:`workflow.common.training.fit`
(checkpoints in ``run_dir``, resume after a kill), the weights of the best ``val_loss`` epoch
are exported, and the folder is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from workflow.common.atomic import atomic_dir
from workflow.common.config import schema_defaults
from workflow.common.loaders import resumable_loader
from workflow.common.optim import adamw_warmup_cosine
from workflow.common.schedule import warmup_steps
from workflow.common.target import RunTarget
from workflow.common.training import fit, read_checkpoint, resumable, train_settings

log = logging.getLogger("lsai.watermark.lm")

#: GPT-2's one special token, used as bos, eos, unk and padding.
EOS = "<|endoftext|>"
#: GPT-style AdamW betas: a shorter second-moment memory than Adam's 0.999 steadies short runs.
BETAS = (0.9, 0.95)
#: Settings of :func:`train_lm`: config/schema/watermark.yaml $defs/watermark_lm without its
#: ``CORPUS_KEYS`` (the stage uses those to write the documents). On the default 350 documents
#: (0.7 MB, 140k tokens) the defaults train in 59 s on one CPU thread (35 s on two) to a
#: validation perplexity of 22.7 (the generator's own entropy is about 2.2 nats per token,
#: perplexity 9): sampled text has the corpus's words in roughly its patterns, which is all the
#: watermark needs. Measured on 50 held-out documents (lefthash, gamma 0.25, delta 2,
#: temperature 0.7, 200 new tokens): z >= 4 for 50/50 watermarked completions (min z 11.1), max
#: z 2.45 unwatermarked and 2.29 for the human completions.
CORPUS_KEYS = ("documents", "seed")
LM_DEFAULTS: dict[str, Any] = {
    k: v for k, v in schema_defaults("watermark_lm").items() if k not in CORPUS_KEYS
}


def lm_settings(settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults overlaid with ``settings``; an unknown key is a typo that would silently be
    ignored, so it fails."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(LM_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown LM settings {unknown} (known: {', '.join(LM_DEFAULTS)})")
    s = {**LM_DEFAULTS, **settings}
    if int(s["block_size"]) > int(s["n_positions"]):
        raise ValueError(f"block_size {s['block_size']} exceeds n_positions {s['n_positions']}")
    if int(s["n_embd"]) % int(s["n_head"]):
        raise ValueError(f"n_embd {s['n_embd']} is not a multiple of n_head {s['n_head']}")
    return s


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE like GPT-2's: any text encodes (no unknown bytes), spaces belong to
    the following word, and ``<|endoftext|>`` is the one special token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def gpt2_config(settings: Mapping[str, Any], vocab_size: int, eos_id: int) -> GPT2Config:
    s = settings
    return GPT2Config(
        vocab_size=int(vocab_size),
        n_positions=int(s["n_positions"]),
        n_embd=int(s["n_embd"]),
        n_layer=int(s["n_layer"]),
        n_head=int(s["n_head"]),
        resid_pdrop=float(s["dropout"]),
        embd_pdrop=float(s["dropout"]),
        attn_pdrop=float(s["dropout"]),
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


class CausalLM(L.LightningModule):
    """A GPT-2 trained on next-token cross-entropy; ``val_ppl`` is exp of the token-mean
    ``val_loss`` (not a mean of per-batch perplexities)."""

    def __init__(self, settings: Mapping[str, Any], vocab_size: int, eos_id: int) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"settings": dict(settings), "vocab_size": vocab_size, "eos_id": eos_id}
        )
        self.settings = lm_settings(settings)
        self.model = GPT2LMHeadModel(gpt2_config(self.settings, vocab_size, eos_id))
        self.val_mean = MeanMetric()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, labels=ids).loss

    def training_step(self, batch: torch.Tensor, _: int) -> torch.Tensor:
        loss = self(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(batch))  # fmt: skip
        return loss

    def validation_step(self, batch: torch.Tensor, _: int) -> torch.Tensor:
        loss = self(batch)
        self.val_mean.update(loss, weight=len(batch))  # equal-length blocks: a token mean
        return loss

    def on_validation_epoch_end(self) -> None:
        loss = self.val_mean.compute()  # synced over ranks
        self.val_mean.reset()
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_ppl", loss.exp())

    def configure_optimizers(self) -> dict[str, Any]:
        s = self.settings
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(
            self.model, float(s["lr"]), float(s["weight_decay"]), warmup_steps(s, total),
            total, betas=BETAS,
        )  # fmt: skip


class BlockDataModule(L.LightningDataModule):
    """Documents tokenized, joined with eos, cut into ``block_size`` token blocks.

    Validation holds out whole documents, so no val block shares text with a train block.
    """

    def __init__(
        self,
        texts: Sequence[str],
        tokenizer: PreTrainedTokenizerFast,
        block_size: int,
        batch_size: int,
        val_fraction: float,
        seed: int,
    ) -> None:
        super().__init__()
        if len(texts) < 2:
            raise ValueError(f"need at least 2 documents (train and val), got {len(texts)}")
        self.batch_size = int(batch_size)
        self.seed = seed
        order = np.random.default_rng(seed).permutation(len(texts))
        n_val = min(max(1, round(val_fraction * len(texts))), len(texts) - 1)
        self.val_documents, self.train_documents = n_val, len(texts) - n_val
        eos = int(tokenizer.eos_token_id)
        self.val_blocks = blocks([texts[i] for i in order[:n_val]], tokenizer, block_size, eos)
        self.train_blocks = blocks([texts[i] for i in order[n_val:]], tokenizer, block_size, eos)
        for name, data in (("validation", self.val_blocks), ("training", self.train_blocks)):
            if len(data) == 0:
                raise ValueError(f"too little {name} text for one block of {block_size} tokens")

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return resumable_loader(self.train_blocks, self.batch_size, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_blocks, batch_size=self.batch_size, num_workers=0)


def blocks(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerFast, block_size: int, eos: int
) -> torch.Tensor:
    """(n, block_size) ids; the tail shorter than a block is dropped.

    Encoded by the backend tokenizer: whole documents are longer than ``model_max_length``,
    which the wrapper would warn about.
    """
    encoded = tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
    stream = np.fromiter((t for e in encoded for t in (*e.ids, eos)), dtype=np.int64)
    n = len(stream) // block_size
    return torch.from_numpy(stream[: n * block_size].reshape(n, block_size).copy())


@torch.no_grad()
def mean_loss(model: PreTrainedModel, data: torch.Tensor, batch_size: int) -> float:
    """Token-mean cross-entropy of equal-length blocks."""
    model.eval()
    losses = [
        float(model(input_ids=b, labels=b).loss) * len(b) for b in data.split(int(batch_size))
    ]
    return sum(losses) / len(data)


def train_lm(
    texts: Sequence[str],
    settings: Mapping[str, Any] | None,
    target: RunTarget,
) -> dict[str, Any]:
    """Train the tokenizer and the LM on ``texts`` and publish a Hugging Face folder at the
    target's ``final`` (replacing one that exists); returns what the run reached and cost.

    A ``run_dir`` holding ``checkpoints/last.ckpt`` resumes, with the tokenizer saved there
    by the first attempt (the checkpoint's ids mean nothing under another tokenizer).
    """
    started = time.monotonic()
    s = lm_settings(settings)
    run_dir, out_dir, seed = target.run_dir, target.final, target.seed
    run = train_settings(
        s, target,
        key_data={"texts": hashlib.sha256("\x00".join(texts).encode()).hexdigest()},
        trainer_overrides={"gradient_clip_val": float(s["grad_clip"]) or None},
    )  # fmt: skip
    resuming = resumable(run) is not None
    tokenizer = run_tokenizer(texts, s, run_dir, resuming=resuming)
    data = BlockDataModule(texts, tokenizer, s["block_size"], s["batch_size"],
                           s["val_fraction"], seed)  # fmt: skip
    L.seed_everything(seed, workers=True, verbose=False)  # the initial weights depend on it
    module = CausalLM(s, len(tokenizer), int(tokenizer.eos_token_id))
    parameters = sum(p.numel() for p in module.model.parameters())
    log.info(
        "%d train / %d val documents: %d / %d blocks of %d tokens, %d parameters",
        data.train_documents, data.val_documents, len(data.train_blocks), len(data.val_blocks),
        s["block_size"], parameters,
    )  # fmt: skip
    result = fit(module, data, run)
    best = read_checkpoint(result.best_checkpoint, "LM checkpoint")
    module.load_state_dict(best["state_dict"])
    val_loss = mean_loss(module.model, data.val_blocks, s["batch_size"])
    if result.is_global_zero:
        tokenizer.model_max_length = int(s["n_positions"])
        save_hf(module.model, tokenizer, Path(out_dir))
        log.info("val loss %.4f (ppl %.2f) -> %s", val_loss, math.exp(val_loss), out_dir)
    return {
        "val_loss": val_loss,
        "val_ppl": math.exp(val_loss),
        "parameters": parameters,
        "vocab_size": len(tokenizer),
        "train_documents": data.train_documents,
        "val_documents": data.val_documents,
        "train_tokens": data.train_blocks.numel(),
        "val_tokens": data.val_blocks.numel(),
        "max_epochs": int(s["max_epochs"]),
        "best_epoch": int(best.get("epoch", -1)),
        "best_checkpoint": str(result.best_checkpoint),
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_wall_time_s": result.wall_time_s,
        "wall_time_s": time.monotonic() - started,
    }


def run_tokenizer(
    texts: Sequence[str], settings: Mapping[str, Any], run_dir: Path, resuming: bool
) -> PreTrainedTokenizerFast:
    """The run's tokenizer: the saved one when resuming, else a fresh one saved for later."""
    saved = run_dir / "tokenizer"
    if resuming and saved.is_dir():
        log.info("resuming: tokenizer from %s", saved)
        return AutoTokenizer.from_pretrained(saved)
    tokenizer = train_tokenizer(texts, settings["vocab_size"])
    with atomic_dir(saved) as tmp:
        tokenizer.save_pretrained(tmp)
    return tokenizer


def save_hf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """``save_pretrained`` of both into a sibling folder renamed onto ``out_dir``: a killed
    job never leaves a folder that loads half a model."""
    eos = int(tokenizer.eos_token_id)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
