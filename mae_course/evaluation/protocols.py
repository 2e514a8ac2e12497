"""Lesson 07: the pieces that make the paper's three protocols for judging an encoder.

* **linear probing**: the encoder is frozen; :func:`probe_head` (BatchNorm without affine
  parameters, then a linear layer) is all that trains, with LARS (:mod:`~mae_course.evaluation.lars`);
* **fine-tuning**: everything trains, with layer-wise lr decay (:func:`layer_decay_groups`): the
  closer a layer is to the input, the smaller its learning rate;
* **partial fine-tuning** (Figure 9): only the last blocks, or the last block's MLP, and the
  head train (:func:`tune_only_last`).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def probe_head(dim: int, num_classes: int) -> nn.Sequential:
    """The linear probe: BatchNorm without affine parameters (eps 1e-6), then a linear layer.

    The BatchNorm only standardises the frozen features (a fixed, data-driven rescaling),
    so the classifier stays linear; the head starts small (std 0.01, bias 0).
    """
    linear = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


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


def tune_only_last(model: nn.Module, blocks: int | None = None, mlp_only: bool = False) -> None:
    """Freeze a ViT classifier but for its last ``blocks`` blocks (or, with ``mlp_only``, the
    MLP of its last block, with the norm before it), its final norm and its head."""
    depth = len(model.blocks)
    if blocks is not None and blocks > depth:
        raise ConfigError(f"tune_blocks={blocks}, but the encoder has only {depth} blocks")
    model.requires_grad_(False)
    last = model.blocks[-1]
    tuned = [last.norm2, last.mlp] if mlp_only else list(model.blocks[depth - blocks :])
    for module in [*tuned, model.head, getattr(model, "norm", None), getattr(model, "fc_norm", None)]:
        if module is not None:
            module.requires_grad_(True)
