"""Checks for lesson 02: random masking by shuffling with noise."""

from __future__ import annotations

import torch

from ..model import masking as ref
from ._core import call, exercise, expect_shape, expect_tensor, fail
from ._messages import define, say

_NAME = "random_masking"

MESSAGES = define(
    {
        "random_masking.checked": "keep count, smallest noise kept, mask convention, ids_restore, fresh noise per sample",
        "random_masking.three_things": "random_masking should return three things: (x_visible, mask, ids_restore)",
        "random_masking.three_tensors": "tensors (x_visible, mask, ids_restore)",
        "random_masking.case": "x of shape {shape}, mask_ratio={ratio} and given noise",
        "random_masking.kept_fraction": "you kept the fraction mask_ratio; mask_ratio is the fraction removed",
        "random_masking.off_by_one": "an off-by-one: keep exactly int(L * (1 - mask_ratio)) tokens",
        "random_masking.keep_count": "keep int(L * (1 - mask_ratio)) tokens",
        "random_masking.kept": "random_masking: for {case} you kept {kept} tokens, expected {expected}: {why}",
        "random_masking.visible_shape": "x_visible holds the kept tokens, for {case}",
        "random_masking.mask_shape": "mask has one entry per token",
        "random_masking.restore_shape": "ids_restore has one index per token",
        "random_masking.own_noise": "random_masking gave two different results for the same given noise: it draws its "
        "own. Use the noise it is given (draw one only when noise is None): the same noise "
        "must always keep the same tokens",
        "random_masking.largest": "random_masking keeps the tokens with the largest noise; keep the smallest: "
        "ids_shuffle = torch.argsort(noise, dim=1) sorts ascending, and the first len_keep are kept",
        "random_masking.sorted": "random_masking: the kept tokens are right but sorted by position; keep them in the "
        "shuffled order (ids_shuffle[:, :len_keep]), which is what ids_restore undoes later",
        "random_masking.wrong_tokens": "random_masking: x_visible holds the wrong tokens for {case}; gather x with "
        "ids_shuffle[:, :len_keep] along dim 1 (expand the indices over the last axis)",
        "random_masking.inverted": "random_masking: the mask is 1 for kept tokens; the convention is 1 = removed, 0 = kept",
        "random_masking.shuffled_mask": "random_masking: the mask is still in the shuffled order (all zeros first); put "
        "it back in token order with torch.gather(mask, 1, ids_restore)",
        "random_masking.wrong_mask": "random_masking: wrong mask for {case}; it must be 1 exactly at the removed tokens, "
        "in token order",
        "random_masking.returned_shuffle": "random_masking: you returned ids_shuffle; ids_restore is its inverse, "
        "torch.argsort(ids_shuffle, dim=1)",
        "random_masking.wrong_restore": "random_masking: ids_restore must undo the shuffle: torch.gather(ids_shuffle, 1, "
        "ids_restore) should be 0, 1, ..., L-1 in every row",
        "random_masking.same_noise_twice": "the same noise twice",
        "random_masking.not_deterministic": "random_masking: the same noise gave different results; with noise given, "
        "nothing may be random",
        "random_masking.with_no_noise": "with noise=None",
        "random_masking.no_noise_count": "random_masking: with noise=None each sample must lose exactly L - len_keep = 37 "
        "of 49 tokens",
        "random_masking.shared_noise": "random_masking: with noise=None all samples got the same mask; draw noise = "
        "torch.rand(N, L), one row per sample",
    }
)


def _unpack(out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(out, tuple | list) or len(out) != 3:
        raise fail("random_masking.three_things")
    return tuple(expect_tensor(_NAME, t, "random_masking.three_tensors") for t in out)


def _check_against_reference(fn, n: int, length: int, dim: int, ratio: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, dim, generator=g)
    noise = torch.rand(n, length, generator=g)
    case = say("random_masking.case", shape=(n, length, dim), ratio=ratio)
    x_vis, mask, ids_restore = _unpack(call(_NAME, fn, x.clone(), ratio, noise=noise.clone(), case=case))
    r_vis, r_mask, r_restore = ref.random_masking(x, ratio, noise=noise)
    len_keep = r_vis.shape[1]
    ids_shuffle = torch.argsort(noise, dim=1)

    # --- how many tokens are kept
    if x_vis.ndim == 3 and x_vis.shape[0] == n and x_vis.shape[2] == dim and x_vis.shape[1] != len_keep:
        kept = x_vis.shape[1]
        if kept == length - len_keep:
            why = say("random_masking.kept_fraction")
        elif abs(kept - len_keep) == 1:
            why = say("random_masking.off_by_one")
        else:
            why = say("random_masking.keep_count")
        raise fail("random_masking.kept", case=case, kept=kept, expected=len_keep, why=why)
    expect_shape(_NAME, x_vis, (n, len_keep, dim), say("random_masking.visible_shape", case=case))
    expect_shape(_NAME, mask, (n, length), say("random_masking.mask_shape"))
    expect_shape(_NAME, ids_restore, (n, length), say("random_masking.restore_shape"))

    # --- which tokens, in which order
    if not torch.allclose(x_vis, r_vis):
        again = _unpack(call(_NAME, fn, x.clone(), ratio, noise=noise.clone(), case=case))[0]
        if not torch.equal(again, x_vis):
            raise fail("random_masking.own_noise")
        largest = torch.gather(x, 1, ids_shuffle.flip(1)[:, :len_keep, None].expand(-1, -1, dim))
        by_position = torch.gather(x, 1, ids_shuffle[:, :len_keep].sort(dim=1).values[:, :, None].expand(-1, -1, dim))
        if torch.allclose(x_vis, largest):
            raise fail("random_masking.largest")
        if torch.allclose(x_vis, by_position):
            raise fail("random_masking.sorted")
        raise fail("random_masking.wrong_tokens", case=case)

    # --- the mask
    m = mask.float()
    if not torch.equal(m, r_mask):
        if torch.equal(m, 1 - r_mask):
            raise fail("random_masking.inverted")
        shuffled = torch.ones(n, length)
        shuffled[:, :len_keep] = 0
        if torch.equal(m, shuffled):
            raise fail("random_masking.shuffled_mask")
        raise fail("random_masking.wrong_mask", case=case)

    # --- the inverse permutation
    if not torch.equal(ids_restore.long(), r_restore):
        if torch.equal(ids_restore.long(), ids_shuffle):
            raise fail("random_masking.returned_shuffle")
        raise fail("random_masking.wrong_restore")


@exercise("random_masking")
def check_random_masking(fn) -> None:
    _check_against_reference(fn, n=3, length=16, dim=4, ratio=0.75, seed=0)
    _check_against_reference(fn, n=2, length=196, dim=3, ratio=0.75, seed=1)  # 49 of 196 kept, as in the paper
    _check_against_reference(fn, n=4, length=10, dim=2, ratio=0.5, seed=2)
    _check_against_reference(fn, n=2, length=64, dim=2, ratio=0.9, seed=3)  # int(6.4) = 6 kept
    _check_against_reference(fn, n=1, length=9, dim=2, ratio=0.0, seed=4)  # nothing removed
    _check_against_reference(fn, n=2, length=14, dim=2, ratio=0.75, seed=5)  # 3.5: int() keeps 3, round() 4

    # Determinism: the same noise gives the same result.
    x, noise = torch.randn(2, 16, 3), torch.rand(2, 16)
    twice = say("random_masking.same_noise_twice")
    a = _unpack(call(_NAME, fn, x, 0.75, noise=noise, case=twice))
    b = _unpack(call(_NAME, fn, x, 0.75, noise=noise.clone(), case=twice))
    if not all(torch.equal(u, v) for u, v in zip(a, b, strict=True)):
        raise fail("random_masking.not_deterministic")

    # Without noise: each sample draws its own.
    x = torch.randn(8, 49, 3)
    x_vis, mask, _ = _unpack(call(_NAME, fn, x, 0.75, case="noise=None"))
    expect_shape(_NAME, mask, (8, 49), say("random_masking.with_no_noise"))
    if not torch.equal(mask.float().sum(1), torch.full((8,), 49.0 - 12)):
        raise fail("random_masking.no_noise_count")
    if len({tuple(row.tolist()) for row in mask.float()}) < 8:
        raise fail("random_masking.shared_noise")
