"""Optimizer set-up: AdamW with weight decay on weight matrices only."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAMES = ("cls_token", "mask_token", "encoder_mask_token", "pos_embed", "decoder_pos_embed")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into two groups: weight matrices (decayed) and the rest.

    Biases, LayerNorm parameters (every 1-D tensor) and the learned tokens get no weight
    decay; frozen parameters (the fixed positional tables) are left out.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.95),
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW with the pretraining recipe's betas (0.9, 0.95) and decay groups.

    ``fused`` defaults to the fused CUDA kernel when the model is on a GPU.
    """
    if fused is None:
        fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas, fused=fused)
