"""Optimiser pieces shared by the tracks, so that every track decays and schedules alike."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """open_clip's rule: no weight decay on biases, norms, gains and the logit scale; decaying
    them only pulls scales towards 0 without regularising anything."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """``LambdaLR`` factor: linear warm-up over ``warmup`` steps to the peak, then cosine to 0
    at ``total`` (step it per optimiser step, not per epoch)."""
    warmup = max(int(warmup), 1)
    total = max(int(total), warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / (total - warmup), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def adamw_warmup_cosine(
    module: torch.nn.Module,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    **adamw: Any,
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer: AdamW with weight decay on the weights only
    (:func:`no_decay`), the learning rate following :func:`warmup_cosine` step by step."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, **adamw)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(warmup_steps, total_steps)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
