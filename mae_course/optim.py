"""Optimizer set-up: AdamW with weight decay on weight matrices only, and layer-wise
learning-rate decay for fine-tuning."""

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


OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "for-loop")


def adamw_impl_flags(impl: str, device: torch.device) -> dict[str, bool]:
    """The ``torch.optim.AdamW`` keyword arguments that select an implementation.

    All three compute the same update (up to float rounding), only the speed differs:

    * "for-loop": one small kernel per parameter tensor per operation (~10 per tensor);
    * "foreach": the same operations on lists of tensors, a few launches for all of them;
    * "fused": the whole update of all tensors in one kernel (CUDA, and the CPU since torch 2.4);
      with a GradScaler it also unscales and skips steps inside the kernel, without a host sync.

    "auto" is fused on CUDA and CPU (on a 2-core CPU, 4x faster than the for-loop for the mini
    model), foreach elsewhere.
    """
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(f"unknown optimizer implementation {impl!r}; choose one of {', '.join(OPTIMIZER_IMPLS)}")
    if impl == "auto":
        impl = "fused" if device.type in ("cuda", "cpu") else "foreach"
    return {"fused": impl == "fused", "foreach": impl == "foreach"}


def make_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.95),
    impl: str = "auto",
) -> torch.optim.AdamW:
    """AdamW with the pretraining recipe's betas (0.9, 0.95) and decay groups.

    ``impl`` picks the kernel (see :func:`adamw_impl_flags`): "auto", "fused", "foreach" or
    "for-loop"; "auto" is fused on the model's device when it is a GPU or the CPU.
    """
    flags = adamw_impl_flags(impl, next(model.parameters()).device)
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas, **flags)


def layer_id(name: str, num_layers: int) -> int:
    """Which "layer" a ViT parameter belongs to, for layer-wise lr decay.

    0 for the input side (patch embedding, cls token, positional table), i + 1 for block i,
    and ``num_layers`` (= depth + 1) for everything after the blocks (norms and the head).
    """
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW parameter groups with layer-wise lr decay (for fine-tuning a ViT).

    A parameter of layer ``i`` gets ``lr_scale = layer_decay ** (num_layers - i)``: 1 for the
    head and final norm, then geometrically smaller towards the input, the smallest for the
    patch embedding, cls token and positional table. Weight decay applies to weight matrices
    only. Frozen parameters are left out. The training loop sets each group's lr to
    ``lr * group["lr_scale"]``.
    """
    num_layers = len(model.blocks) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, num_layers)
        decay = param.ndim > 1 and name not in ("cls_token", "pos_embed")
        group = groups.setdefault(
            (layer, decay),
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (num_layers - layer),
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]
