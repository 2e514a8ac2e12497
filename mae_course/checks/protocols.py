"""Checks for lesson 07: the linear-probe head and layer-wise lr decay."""

from __future__ import annotations

import torch
from torch import nn

from ..evaluation.protocols import layer_decay_groups as ref_groups
from ..model.vit import VisionTransformer
from ._core import CheckFailed, call, exercise

_HEAD = "probe_head"


def _modules(head: nn.Module) -> list[nn.Module]:
    return [m for m in head.modules() if not list(m.children())]  # the leaves, in order


@exercise(_HEAD, "BatchNorm without affine (eps 1e-6) first, then a linear layer initialised small, shapes")
def check_probe_head(fn) -> None:
    head = call(_HEAD, fn, 64, 7, case="dim=64, num_classes=7")
    if not isinstance(head, nn.Module):
        raise CheckFailed(f"{_HEAD} should return an nn.Module (e.g. nn.Sequential), got {type(head).__name__}")
    leaves = _modules(head)
    norms = [m for m in leaves if isinstance(m, nn.BatchNorm1d | nn.LayerNorm)]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise CheckFailed(f"{_HEAD} needs exactly one nn.Linear (the probe is linear), found {len(linears)}")
    linear = linears[0]
    if (linear.in_features, linear.out_features) != (64, 7):
        raise CheckFailed(
            f"{_HEAD}: the linear layer maps {linear.in_features} -> {linear.out_features}, expected 64 -> 7"
        )
    if not norms:
        raise CheckFailed(
            f"{_HEAD} has no BatchNorm1d before the linear layer; the frozen features must be standardised first"
        )
    norm = norms[0]
    if isinstance(norm, nn.LayerNorm):
        raise CheckFailed(f"{_HEAD} uses LayerNorm; use BatchNorm1d, which standardises each feature over the batch")
    if leaves.index(norm) > leaves.index(linear):
        raise CheckFailed(f"{_HEAD}: the BatchNorm must come before the linear layer")
    if norm.affine:
        raise CheckFailed(
            f"{_HEAD}: use BatchNorm1d(dim, affine=False); learned scale and shift would add parameters to the probe"
        )
    if norm.eps != 1e-6:
        raise CheckFailed(f"{_HEAD}: the official probe uses eps=1e-6 in the BatchNorm, got {norm.eps}")
    if linear.bias is None:
        raise CheckFailed(
            f"{_HEAD}: the linear layer has no bias; the probe's nn.Linear keeps its bias (the default bias=True), "
            "started at zero (nn.init.zeros_)"
        )
    if linear.bias.abs().max() > 0:
        raise CheckFailed(f"{_HEAD}: start the linear layer's bias at zero (nn.init.zeros_)")
    big_head = call(_HEAD, fn, 1024, 100, case="dim=1024, num_classes=100")
    big = [m for m in _modules(big_head) if isinstance(m, nn.Linear)]
    std = big[0].weight.std().item() if len(big) == 1 else None
    if std is None or not 0.005 < std < 0.015:
        raise CheckFailed(
            f"{_HEAD}: initialise the linear weights with std 0.01 (nn.init.trunc_normal_(w, std=0.01)), got std {std}"
        )
    # behaviour: in training mode the head ignores each feature's scale and offset
    torch.manual_seed(0)
    features = torch.randn(32, 64)
    head.train()
    a = call(_HEAD, head, features, case="the head called on features of shape (32, 64)")
    b = call(_HEAD, head, features * 5 + 3, case="the head called on features of shape (32, 64)")
    if a.shape != (32, 7) or not torch.allclose(a, b, atol=1e-3):
        raise CheckFailed(
            f"{_HEAD}: in training mode, rescaled features should give the same logits (the BatchNorm standardises them)"
        )


_LRD = "layer_decay_groups"


def _small_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=3, num_heads=2)


def _table(groups, model) -> dict[str, tuple[float, float]]:
    """parameter name -> (lr_scale, weight_decay), from a list of param groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    table: dict[str, tuple[float, float]] = {}
    for group in groups:
        if not isinstance(group, dict) or "params" not in group:
            raise CheckFailed(f"{_LRD} should return a list of dicts with 'params', 'weight_decay' and 'lr_scale'")
        for p in group["params"]:
            name = names.get(id(p), "?")
            if name in table:
                raise CheckFailed(f"{_LRD}: {name} is in two groups; every parameter belongs to exactly one")
            table[name] = (group.get("lr_scale", 1.0), group.get("weight_decay", 0.0))
    return table


@exercise(
    _LRD,
    "lr scale per layer (1 at the head, decay^(L+1) at the input), no decay on biases/norms/tokens, frozen left out",
)
def check_layer_decay_groups(fn) -> None:
    model = _small_vit()  # depth 3: layers 0 (input) .. 4 (final norm and head)
    expected = _table(ref_groups(model, 0.05, 0.5), model)
    got = _table(call(_LRD, fn, model, 0.05, 0.5, case="a 3-block ViT, weight_decay=0.05, layer_decay=0.5"), model)
    missing = sorted(set(expected) - set(got))
    if missing:
        raise CheckFailed(f"{_LRD}: these trainable parameters are in no group: {', '.join(missing[:4])}")
    scale_of = {name: value[0] for name, value in got.items()}
    if scale_of["blocks.0.norm1.weight"] > scale_of["blocks.2.norm1.weight"]:
        raise CheckFailed(
            f"{_LRD}: block 0 gets a larger lr than block 2; the decay runs the wrong way: the lowest blocks get the smallest lr"
        )
    if scale_of["head.weight"] < 1 - 1e-9:
        raise CheckFailed(
            f"{_LRD}: the head has lr_scale {scale_of['head.weight']:g}; the head (and the final norm) must keep the full lr: lr_scale 1"
        )
    for token in ("cls_token", "pos_embed"):
        if (
            abs(scale_of[token] - expected["patch_embed.proj.weight"][0]) > 1e-9
            and abs(scale_of[token] - scale_of["blocks.0.norm1.weight"]) < 1e-9
        ):
            raise CheckFailed(
                f"{_LRD}: {token} has block 0's lr; the cls token and positional table belong with the patch embedding (layer 0)"
            )
    for name, (scale, decay) in expected.items():
        got_scale, got_decay = got[name]
        if abs(got_scale - scale) > 1e-9:
            raise CheckFailed(
                f"{_LRD}: {name} has lr_scale {got_scale:g}, expected {scale:g}: "
                "lr_scale = layer_decay ** (num_layers - layer_id), with num_layers = depth + 1"
            )
        if abs(got_decay - decay) > 1e-12:
            what = (
                "biases, norms, the cls token and the positional table get no weight decay"
                if decay == 0
                else "weight matrices keep weight_decay"
            )
            raise CheckFailed(f"{_LRD}: {name} has weight_decay {got_decay:g}, expected {decay:g}: {what}")
    model.blocks[0].requires_grad_(False)
    frozen = _table(call(_LRD, fn, model, 0.05, 0.5, case="block 0 frozen"), model)
    if any(name.startswith("blocks.0.") for name in frozen):
        raise CheckFailed(f"{_LRD}: frozen parameters (requires_grad=False) must be left out of the groups")
