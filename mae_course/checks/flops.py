"""Checks for lesson 08: counting the FLOPs of a Transformer block."""

from __future__ import annotations

from ..experiments.flops import block_flops as ref_block_flops
from ._core import call, exercise, fail
from ._messages import define, say

MESSAGES = define(
    {
        "block_flops.checked": "qkv, projection and MLP matrix products plus the two attention products, 2 FLOPs per "
        "multiply-add",
        "block_flops.case": "T={tokens}, D={dim}, mlp_ratio={ratio}",
        "block_flops.not_a_number": "block_flops should return a number, got {kind}",
        "block_flops.no_attention": "block_flops: the attention products are missing: q k^T and (weights) v cost "
        "2 T^2 D each",
        "block_flops.multiply_adds": "block_flops: counts multiply-adds; a multiply-add is 2 FLOPs",
        "block_flops.no_projection": "block_flops: the output projection (D -> D) is missing: it adds 2 T D^2",
        "block_flops.qkv": "block_flops: the qkv projection maps D to 3D: 6 T D^2, not 2 T D^2",
        "block_flops.one_mlp_layer": "block_flops: the MLP has two layers (D -> rD -> D): 4 r T D^2",
        "block_flops.one_attention_product": "block_flops: only one attention product counted; there are two: the "
        "scores and the weighted sum",
        "block_flops.wrong": "block_flops: for T={tokens}, D={dim}, mlp_ratio={ratio} expected {expected:.4g}, "
        "got {got:.4g}",
    }
)

_FLOPS = "block_flops"


@exercise(_FLOPS)
def check_block_flops(fn) -> None:
    cases = [(50, 768, 4.0), (197, 768, 4.0), (17, 128, 4.0), (65, 96, 4.0), (10, 8, 2.0)]
    for tokens, dim, ratio in cases:
        got = call(_FLOPS, fn, tokens, dim, ratio, case=say("block_flops.case", tokens=tokens, dim=dim, ratio=ratio))
        if not isinstance(got, int | float):
            raise fail("block_flops.not_a_number", kind=type(got).__name__)
        expected = ref_block_flops(tokens, dim, ratio)
        if abs(got - expected) <= 1e-6 * expected:
            continue
        t, d, r = tokens, dim, ratio
        linear, attention = (8 + 4 * r) * t * d * d, 4 * t * t * d
        for wrong, problem in [
            (linear, "block_flops.no_attention"),
            (linear / 2 + attention / 2, "block_flops.multiply_adds"),
            ((6 + 4 * r) * t * d * d + attention, "block_flops.no_projection"),
            ((4 + 4 * r) * t * d * d + attention, "block_flops.qkv"),
            ((8 + 2 * r) * t * d * d + attention, "block_flops.one_mlp_layer"),
            (linear + 2 * t * t * d, "block_flops.one_attention_product"),
        ]:
            if abs(got - wrong) <= 1e-6 * abs(wrong):
                raise fail(problem)
        raise fail("block_flops.wrong", tokens=t, dim=d, ratio=r, expected=expected, got=got)
