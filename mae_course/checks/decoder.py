"""Checks for lesson 04: the decoder's input, the masked loss and the normalized-pixel target."""

from __future__ import annotations

import torch

from ..model import decoder as ref
from ..model.masking import random_masking
from ._core import CheckFailed, call, exercise, expect_shape, expect_tensor, same

_UNSHUFFLE = "unshuffle_with_mask_tokens"


def _gather(seq: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.gather(seq, 1, ids[:, :, None].expand(-1, -1, seq.shape[-1]))


@exercise(_UNSHUFFLE, "visible tokens back in their places, the mask token everywhere else, shapes")
def check_unshuffle_with_mask_tokens(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, length, dim, ratio in [(2, 16, 4, 0.75), (3, 9, 2, 0.5), (1, 49, 8, 0.9)]:
        x = torch.randn(n, length, dim, generator=g)
        noise = torch.rand(n, length, generator=g)
        x_vis, mask, ids_restore = random_masking(x, ratio, noise=noise)
        token = torch.randn(1, 1, dim, generator=g)
        case = f"{x_vis.shape[1]} visible of {length} tokens"
        out = expect_tensor(
            _UNSHUFFLE, call(_UNSHUFFLE, fn, x_vis.clone(), token.clone(), ids_restore.clone(), case=case)
        )
        expect_shape(_UNSHUFFLE, out, (n, length, dim), f"for {case}: one token per patch, (N, L, D)")
        expected = ref.unshuffle_with_mask_tokens(x_vis, token, ids_restore)
        if same(out, expected):
            continue
        keep = x_vis.shape[1]
        mask_tokens = token.expand(n, length - keep, dim)
        ids_shuffle = torch.argsort(noise, dim=1)
        if same(out, torch.cat([x_vis, mask_tokens], 1)):
            raise CheckFailed(
                f"{_UNSHUFFLE}: the tokens are still in the shuffled order; gather with ids_restore to put them back"
            )
        if same(out, _gather(torch.cat([mask_tokens, x_vis], 1), ids_restore)):
            raise CheckFailed(
                f"{_UNSHUFFLE}: the mask tokens must come after the visible ones before unshuffling "
                "(in the shuffled order the kept tokens are first)"
            )
        if same(out, _gather(torch.cat([x_vis, mask_tokens], 1), ids_shuffle)):
            raise CheckFailed(f"{_UNSHUFFLE}: unshuffle with ids_restore, not with the shuffle itself")
        kept = mask == 0
        if same(out[kept], x[kept]):
            raise CheckFailed(
                f"{_UNSHUFFLE}: the visible tokens are right, but removed places must hold the mask token"
            )
        raise CheckFailed(
            f"{_UNSHUFFLE}: wrong result for {case}; position i must hold patch i's visible token, "
            "or the mask token if patch i was removed"
        )


_LOSS = "masked_mse_loss"


@exercise(_LOSS, "a scalar, mean over each patch, average over removed patches only")
def check_masked_mse_loss(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, length, size in [(2, 16, 12), (3, 10, 5), (1, 4, 48)]:
        pred = torch.randn(n, length, size, generator=g)
        target = torch.randn(n, length, size, generator=g)
        mask = (torch.rand(n, length, generator=g) < 0.7).float()
        mask[:, 0], mask[:, 1] = 1.0, 0.0  # at least one removed and one visible patch per sample
        case = f"pred and target of shape {(n, length, size)}"
        out = expect_tensor(_LOSS, call(_LOSS, fn, pred.clone(), target.clone(), mask.clone(), case=case))
        if out.numel() != 1 or out.ndim != 0:
            raise CheckFailed(f"{_LOSS} should return a scalar (a 0-d tensor), got shape {tuple(out.shape)}")
        expected = ref.masked_mse_loss(pred, target, mask)
        if same(out, expected):
            continue
        per_patch = ((pred - target) ** 2).mean(-1)
        for wrong, problem in [
            (per_patch.mean(), "averages over all patches; only removed patches (mask == 1) count"),
            (
                (per_patch * (1 - mask)).sum() / (1 - mask).sum(),
                "averages over the visible patches; use mask == 1 (removed)",
            ),
            (
                (((pred - target) ** 2).sum(-1) * mask).sum() / mask.sum(),
                "sums over each patch's values; take their mean",
            ),
            (
                (per_patch * mask).sum() / (n * length),
                "divides by all N*L patches; divide by the number removed, mask.sum()",
            ),
            ((per_patch * mask).mean(), "divides by all N*L patches; divide by the number removed, mask.sum()"),
        ]:
            if same(out, wrong):
                raise CheckFailed(f"{_LOSS} {problem}")
        raise CheckFailed(f"{_LOSS}: wrong value for {case}: expected {expected.item():.4f}, got {out.item():.4f}")

    # Predictions of visible patches must not matter.
    pred, target = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    mask = torch.tensor([[1.0, 0, 1, 0, 1, 0, 1, 0]] * 2)
    changed = pred + 10 * (1 - mask)[:, :, None]
    a = call(_LOSS, fn, pred, target, mask, case="visible predictions changed")
    b = call(_LOSS, fn, changed, target, mask, case="visible predictions changed")
    if not same(a, b):
        raise CheckFailed(f"{_LOSS}: changing the predictions of visible patches changed the loss")


_NORM = "norm_pix_target"


@exercise(_NORM, "per-patch mean and unbiased variance, eps inside the square root, constant patches")
def check_norm_pix_target(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, length, size in [(2, 6, 12), (1, 4, 48), (3, 5, 3)]:
        target = torch.rand(n, length, size, generator=g) * 3 + 1
        target[0, 0] = 0.5  # a constant patch: variance 0
        target[0, 1] = 0.5 + 1e-3 * torch.randn(size, generator=g)  # a nearly flat one: eps matters
        case = f"targets of shape {(n, length, size)} with a constant and a nearly flat patch"
        out = expect_tensor(_NORM, call(_NORM, fn, target.clone(), case=case))
        expect_shape(_NORM, out, tuple(target.shape), "the target keeps its shape")
        if not torch.isfinite(out).all():
            raise CheckFailed(f"{_NORM}: a constant patch gave inf or nan; add eps = 1e-6 to the variance")
        expected = ref.norm_pix_target(target)
        if same(out, expected, atol=1e-4):
            continue
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        biased = target.var(-1, keepdim=True, unbiased=False)
        for wrong, problem in [
            (
                (target - mean) / (biased + 1e-6) ** 0.5,
                "uses the biased variance; the official code uses the unbiased one (torch.var's default)",
            ),
            (
                (target - mean) / (var**0.5 + 1e-6),
                "adds eps to the standard deviation; add it to the variance: (var + eps) ** 0.5",
            ),
            (
                (target - target.mean()) / (target.var() + 1e-6) ** 0.5,
                "normalizes over the whole batch; normalize each patch over its own values (dim=-1)",
            ),
            (
                (target - target.mean(1, keepdim=True)) / (target.var(1, keepdim=True) + 1e-6) ** 0.5,
                "normalizes across patches (dim=1); normalize each patch over its own values (dim=-1)",
            ),
            (target - mean, "only subtracts the mean; also divide by sqrt(var + eps)"),
        ]:
            if same(out, wrong, atol=1e-4):
                raise CheckFailed(f"{_NORM} {problem}")
        raise CheckFailed(f"{_NORM}: wrong values for {case}; compute (t - mean) / sqrt(var + 1e-6) per patch")
