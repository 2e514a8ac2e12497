"""Checks for lesson 07: the linear-probe head and layer-wise lr decay."""

from __future__ import annotations

import torch
from torch import nn

from ..evaluation.protocols import layer_decay_groups as ref_groups
from ..model.vit import VisionTransformer
from ._core import call, exercise, fail
from ._messages import define, say

MESSAGES = define(
    {
        "probe_head.checked": "BatchNorm without affine (eps 1e-6) first, then a linear layer initialised small, shapes",
        "probe_head.case": "dim={dim}, num_classes={classes}",
        "probe_head.not_a_module": "probe_head should return an nn.Module (e.g. nn.Sequential), got {kind}",
        "probe_head.linears": "probe_head needs exactly one nn.Linear (the probe is linear), found {count}",
        "probe_head.linear_size": "probe_head: the linear layer maps {inputs} -> {outputs}, expected 64 -> 7",
        "probe_head.no_norm": "probe_head has no BatchNorm1d before the linear layer; the frozen features must be "
        "standardised first",
        "probe_head.layer_norm": "probe_head uses LayerNorm; use BatchNorm1d, which standardises each feature over the "
        "batch",
        "probe_head.norm_after": "probe_head: the BatchNorm must come before the linear layer",
        "probe_head.affine": "probe_head: use BatchNorm1d(dim, affine=False); learned scale and shift would add "
        "parameters to the probe",
        "probe_head.eps": "probe_head: the official probe uses eps=1e-6 in the BatchNorm, got {eps}",
        "probe_head.no_bias": "probe_head: the linear layer has no bias; the probe's nn.Linear keeps its bias (the "
        "default bias=True), started at zero (nn.init.zeros_)",
        "probe_head.bias_not_zero": "probe_head: start the linear layer's bias at zero (nn.init.zeros_)",
        "probe_head.init_std": "probe_head: initialise the linear weights with std 0.01 (nn.init.trunc_normal_(w, "
        "std=0.01)), got std {std}",
        "probe_head.called_case": "the head called on features of shape (32, 64)",
        "probe_head.not_standardised": "probe_head: in training mode, rescaled features should give the same logits "
        "(the BatchNorm standardises them)",
        "layer_decay_groups.checked": "lr scale per layer (1 at the head, decay^(L+1) at the input), no decay on "
        "biases/norms/tokens, frozen left out",
        "layer_decay_groups.not_groups": "layer_decay_groups should return a list of dicts with 'params', "
        "'weight_decay' and 'lr_scale'",
        "layer_decay_groups.twice": "layer_decay_groups: {name} is in two groups; every parameter belongs to exactly one",
        "layer_decay_groups.case": "a 3-block ViT, weight_decay=0.05, layer_decay=0.5",
        "layer_decay_groups.missing": "layer_decay_groups: these trainable parameters are in no group: {names}",
        "layer_decay_groups.reversed": "layer_decay_groups: block 0 gets a larger lr than block 2; the decay runs the "
        "wrong way: the lowest blocks get the smallest lr",
        "layer_decay_groups.head_scale": "layer_decay_groups: the head has lr_scale {scale:g}; the head (and the final "
        "norm) must keep the full lr: lr_scale 1",
        "layer_decay_groups.tokens": "layer_decay_groups: {token} has block 0's lr; the cls token and positional table "
        "belong with the patch embedding (layer 0)",
        "layer_decay_groups.scale": "layer_decay_groups: {name} has lr_scale {got:g}, expected {expected:g}: lr_scale = "
        "layer_decay ** (num_layers - layer_id), with num_layers = depth + 1",
        "layer_decay_groups.no_decay": "biases, norms, the cls token and the positional table get no weight decay",
        "layer_decay_groups.keep_decay": "weight matrices keep weight_decay",
        "layer_decay_groups.decay": "layer_decay_groups: {name} has weight_decay {got:g}, expected {expected:g}: {what}",
        "layer_decay_groups.frozen_case": "block 0 frozen",
        "layer_decay_groups.frozen": "layer_decay_groups: frozen parameters (requires_grad=False) must be left out of "
        "the groups",
    }
)

_HEAD = "probe_head"


def _modules(head: nn.Module) -> list[nn.Module]:
    return [m for m in head.modules() if not list(m.children())]  # the leaves, in order


@exercise(_HEAD)
def check_probe_head(fn) -> None:
    head = call(_HEAD, fn, 64, 7, case=say("probe_head.case", dim=64, classes=7))
    if not isinstance(head, nn.Module):
        raise fail("probe_head.not_a_module", kind=type(head).__name__)
    leaves = _modules(head)
    norms = [m for m in leaves if isinstance(m, nn.BatchNorm1d | nn.LayerNorm)]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise fail("probe_head.linears", count=len(linears))
    linear = linears[0]
    if (linear.in_features, linear.out_features) != (64, 7):
        raise fail("probe_head.linear_size", inputs=linear.in_features, outputs=linear.out_features)
    if not norms:
        raise fail("probe_head.no_norm")
    norm = norms[0]
    if isinstance(norm, nn.LayerNorm):
        raise fail("probe_head.layer_norm")
    if leaves.index(norm) > leaves.index(linear):
        raise fail("probe_head.norm_after")
    if norm.affine:
        raise fail("probe_head.affine")
    if norm.eps != 1e-6:
        raise fail("probe_head.eps", eps=norm.eps)
    if linear.bias is None:
        raise fail("probe_head.no_bias")
    if linear.bias.abs().max() > 0:
        raise fail("probe_head.bias_not_zero")
    big_head = call(_HEAD, fn, 1024, 100, case=say("probe_head.case", dim=1024, classes=100))
    big = [m for m in _modules(big_head) if isinstance(m, nn.Linear)]
    std = big[0].weight.std().item() if len(big) == 1 else None
    if std is None or not 0.005 < std < 0.015:
        raise fail("probe_head.init_std", std=std)
    # behaviour: in training mode the head ignores each feature's scale and offset
    torch.manual_seed(0)
    features = torch.randn(32, 64)
    head.train()
    case = say("probe_head.called_case")
    a = call(_HEAD, head, features, case=case)
    b = call(_HEAD, head, features * 5 + 3, case=case)
    if a.shape != (32, 7) or not torch.allclose(a, b, atol=1e-3):
        raise fail("probe_head.not_standardised")


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
            raise fail("layer_decay_groups.not_groups")
        for p in group["params"]:
            name = names.get(id(p), "?")
            if name in table:
                raise fail("layer_decay_groups.twice", name=name)
            table[name] = (group.get("lr_scale", 1.0), group.get("weight_decay", 0.0))
    return table


@exercise(_LRD)
def check_layer_decay_groups(fn) -> None:
    model = _small_vit()  # depth 3: layers 0 (input) .. 4 (final norm and head)
    expected = _table(ref_groups(model, 0.05, 0.5), model)
    got = _table(call(_LRD, fn, model, 0.05, 0.5, case=say("layer_decay_groups.case")), model)
    missing = sorted(set(expected) - set(got))
    if missing:
        raise fail("layer_decay_groups.missing", names=", ".join(missing[:4]))
    scale_of = {name: value[0] for name, value in got.items()}
    if scale_of["blocks.0.norm1.weight"] > scale_of["blocks.2.norm1.weight"]:
        raise fail("layer_decay_groups.reversed")
    if scale_of["head.weight"] < 1 - 1e-9:
        raise fail("layer_decay_groups.head_scale", scale=scale_of["head.weight"])
    for token in ("cls_token", "pos_embed"):
        if (
            abs(scale_of[token] - expected["patch_embed.proj.weight"][0]) > 1e-9
            and abs(scale_of[token] - scale_of["blocks.0.norm1.weight"]) < 1e-9
        ):
            raise fail("layer_decay_groups.tokens", token=token)
    for name, (scale, decay) in expected.items():
        got_scale, got_decay = got[name]
        if abs(got_scale - scale) > 1e-9:
            raise fail("layer_decay_groups.scale", name=name, got=got_scale, expected=scale)
        if abs(got_decay - decay) > 1e-12:
            what = say("layer_decay_groups.no_decay" if decay == 0 else "layer_decay_groups.keep_decay")
            raise fail("layer_decay_groups.decay", name=name, got=got_decay, expected=decay, what=what)
    model.blocks[0].requires_grad_(False)
    frozen = _table(call(_LRD, fn, model, 0.05, 0.5, case=say("layer_decay_groups.frozen_case")), model)
    if any(name.startswith("blocks.0.") for name in frozen):
        raise fail("layer_decay_groups.frozen")
