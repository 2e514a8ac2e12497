"""Checks for lesson 08: counting the FLOPs of a Transformer block."""

from __future__ import annotations

from ..experiments.flops import block_flops as ref_block_flops
from ._core import CheckFailed, call, exercise

_FLOPS = "block_flops"


@exercise(_FLOPS, "qkv, projection and MLP matrix products plus the two attention products, 2 FLOPs per multiply-add")
def check_block_flops(fn) -> None:
    cases = [(50, 768, 4.0), (197, 768, 4.0), (17, 128, 4.0), (65, 96, 4.0), (10, 8, 2.0)]
    for tokens, dim, ratio in cases:
        got = call(_FLOPS, fn, tokens, dim, ratio, case=f"T={tokens}, D={dim}, mlp_ratio={ratio}")
        if not isinstance(got, int | float):
            raise CheckFailed(f"{_FLOPS} should return a number, got {type(got).__name__}")
        expected = ref_block_flops(tokens, dim, ratio)
        if abs(got - expected) <= 1e-6 * expected:
            continue
        t, d, r = tokens, dim, ratio
        linear, attention = (8 + 4 * r) * t * d * d, 4 * t * t * d
        for wrong, problem in [
            (linear, "the attention products are missing: q k^T and (weights) v cost 2 T^2 D each"),
            (linear / 2 + attention / 2, "counts multiply-adds; a multiply-add is 2 FLOPs"),
            ((6 + 4 * r) * t * d * d + attention, "the output projection (D -> D) is missing: it adds 2 T D^2"),
            ((4 + 4 * r) * t * d * d + attention, "the qkv projection maps D to 3D: 6 T D^2, not 2 T D^2"),
            ((8 + 2 * r) * t * d * d + attention, "the MLP has two layers (D -> rD -> D): 4 r T D^2"),
            (
                linear + 2 * t * t * d,
                "only one attention product counted; there are two: the scores and the weighted sum",
            ),
        ]:
            if abs(got - wrong) <= 1e-6 * abs(wrong):
                raise CheckFailed(f"{_FLOPS}: {problem}")
        raise CheckFailed(f"{_FLOPS}: for T={t}, D={d}, mlp_ratio={r} expected {expected:.4g}, got {got:.4g}")
