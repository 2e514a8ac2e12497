"""The learning-rate schedule: linear warmup, then a half-cosine decay, per iteration."""

from __future__ import annotations

import math


def scaled_lr(blr: float, effective_batch: int) -> float:
    """The linear scaling rule of the paper: lr = base lr x effective batch / 256."""
    return blr * effective_batch / 256


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0) -> float:
    """The learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    Rises linearly from 0 over ``warmup_steps``, then follows half a cosine from ``lr``
    down to ``min_lr`` at ``total_steps``.
    """
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
