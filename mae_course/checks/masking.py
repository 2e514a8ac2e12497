"""Checks for lesson 02: random masking by shuffling with noise."""

from __future__ import annotations

import torch

from ..model import masking as ref
from ._core import CheckFailed, call, exercise, expect_shape, expect_tensor

_NAME = "random_masking"


def _unpack(out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(out, tuple | list) or len(out) != 3:
        raise CheckFailed(f"{_NAME} should return three things: (x_visible, mask, ids_restore)")
    return tuple(expect_tensor(_NAME, t, "tensors (x_visible, mask, ids_restore)") for t in out)


def _check_against_reference(fn, n: int, length: int, dim: int, ratio: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, dim, generator=g)
    noise = torch.rand(n, length, generator=g)
    case = f"x of shape {(n, length, dim)}, mask_ratio={ratio} and given noise"
    x_vis, mask, ids_restore = _unpack(call(_NAME, fn, x.clone(), ratio, noise=noise.clone(), case=case))
    r_vis, r_mask, r_restore = ref.random_masking(x, ratio, noise=noise)
    len_keep = r_vis.shape[1]
    ids_shuffle = torch.argsort(noise, dim=1)

    # --- how many tokens are kept
    if x_vis.ndim == 3 and x_vis.shape[0] == n and x_vis.shape[2] == dim and x_vis.shape[1] != len_keep:
        kept = x_vis.shape[1]
        if kept == length - len_keep:
            why = "you kept the fraction mask_ratio; mask_ratio is the fraction removed"
        elif abs(kept - len_keep) == 1:
            why = "an off-by-one: keep exactly int(L * (1 - mask_ratio)) tokens"
        else:
            why = "keep int(L * (1 - mask_ratio)) tokens"
        raise CheckFailed(f"{_NAME}: for {case} you kept {kept} tokens, expected {len_keep}: {why}")
    expect_shape(_NAME, x_vis, (n, len_keep, dim), f"x_visible holds the kept tokens, for {case}")
    expect_shape(_NAME, mask, (n, length), "mask has one entry per token")
    expect_shape(_NAME, ids_restore, (n, length), "ids_restore has one index per token")

    # --- which tokens, in which order
    if not torch.allclose(x_vis, r_vis):
        again = _unpack(call(_NAME, fn, x.clone(), ratio, noise=noise.clone(), case=case))[0]
        if not torch.equal(again, x_vis):
            raise CheckFailed(
                f"{_NAME} gave two different results for the same given noise: it draws its own. Use the noise it "
                "is given (draw one only when noise is None): the same noise must always keep the same tokens"
            )
        largest = torch.gather(x, 1, ids_shuffle.flip(1)[:, :len_keep, None].expand(-1, -1, dim))
        by_position = torch.gather(x, 1, ids_shuffle[:, :len_keep].sort(dim=1).values[:, :, None].expand(-1, -1, dim))
        if torch.allclose(x_vis, largest):
            raise CheckFailed(
                f"{_NAME} keeps the tokens with the largest noise; keep the smallest: "
                "ids_shuffle = torch.argsort(noise, dim=1) sorts ascending, and the first len_keep are kept"
            )
        if torch.allclose(x_vis, by_position):
            raise CheckFailed(
                f"{_NAME}: the kept tokens are right but sorted by position; keep them in the shuffled order "
                "(ids_shuffle[:, :len_keep]), which is what ids_restore undoes later"
            )
        raise CheckFailed(
            f"{_NAME}: x_visible holds the wrong tokens for {case}; gather x with ids_shuffle[:, :len_keep] "
            "along dim 1 (expand the indices over the last axis)"
        )

    # --- the mask
    m = mask.float()
    if not torch.equal(m, r_mask):
        if torch.equal(m, 1 - r_mask):
            raise CheckFailed(f"{_NAME}: the mask is 1 for kept tokens; the convention is 1 = removed, 0 = kept")
        shuffled = torch.ones(n, length)
        shuffled[:, :len_keep] = 0
        if torch.equal(m, shuffled):
            raise CheckFailed(
                f"{_NAME}: the mask is still in the shuffled order (all zeros first); put it back in token order "
                "with torch.gather(mask, 1, ids_restore)"
            )
        raise CheckFailed(f"{_NAME}: wrong mask for {case}; it must be 1 exactly at the removed tokens, in token order")

    # --- the inverse permutation
    if not torch.equal(ids_restore.long(), r_restore):
        if torch.equal(ids_restore.long(), ids_shuffle):
            raise CheckFailed(
                f"{_NAME}: you returned ids_shuffle; ids_restore is its inverse, torch.argsort(ids_shuffle, dim=1)"
            )
        raise CheckFailed(
            f"{_NAME}: ids_restore must undo the shuffle: torch.gather(ids_shuffle, 1, ids_restore) should be "
            "0, 1, ..., L-1 in every row"
        )


@exercise("random_masking", "keep count, smallest noise kept, mask convention, ids_restore, fresh noise per sample")
def check_random_masking(fn) -> None:
    _check_against_reference(fn, n=3, length=16, dim=4, ratio=0.75, seed=0)
    _check_against_reference(fn, n=2, length=196, dim=3, ratio=0.75, seed=1)  # 49 of 196 kept, as in the paper
    _check_against_reference(fn, n=4, length=10, dim=2, ratio=0.5, seed=2)
    _check_against_reference(fn, n=2, length=64, dim=2, ratio=0.9, seed=3)  # int(6.4) = 6 kept
    _check_against_reference(fn, n=1, length=9, dim=2, ratio=0.0, seed=4)  # nothing removed
    _check_against_reference(fn, n=2, length=14, dim=2, ratio=0.75, seed=5)  # 3.5: int() keeps 3, round() 4

    # Determinism: the same noise gives the same result.
    x, noise = torch.randn(2, 16, 3), torch.rand(2, 16)
    a = _unpack(call(_NAME, fn, x, 0.75, noise=noise, case="the same noise twice"))
    b = _unpack(call(_NAME, fn, x, 0.75, noise=noise.clone(), case="the same noise twice"))
    if not all(torch.equal(u, v) for u, v in zip(a, b, strict=True)):
        raise CheckFailed(f"{_NAME}: the same noise gave different results; with noise given, nothing may be random")

    # Without noise: each sample draws its own.
    x = torch.randn(8, 49, 3)
    x_vis, mask, _ = _unpack(call(_NAME, fn, x, 0.75, case="noise=None"))
    expect_shape(_NAME, mask, (8, 49), "with noise=None")
    if not torch.equal(mask.float().sum(1), torch.full((8,), 49.0 - 12)):
        raise CheckFailed(f"{_NAME}: with noise=None each sample must lose exactly L - len_keep = 37 of 49 tokens")
    if len({tuple(row.tolist()) for row in mask.float()}) < 8:
        raise CheckFailed(
            f"{_NAME}: with noise=None all samples got the same mask; draw noise = torch.rand(N, L), one row per sample"
        )
