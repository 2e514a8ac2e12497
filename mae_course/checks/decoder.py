"""Checks for lesson 04: the decoder's input, the masked loss and the normalized-pixel target."""

from __future__ import annotations

import torch

from ..model import decoder as ref
from ..model.masking import random_masking
from ._core import call, exercise, expect_shape, expect_tensor, fail, same
from ._messages import define, say

MESSAGES = define(
    {
        "unshuffle_with_mask_tokens.checked": "visible tokens back in their places, the mask token everywhere else, "
        "shapes",
        "unshuffle_with_mask_tokens.case": "{visible} visible of {length} tokens",
        "unshuffle_with_mask_tokens.shape_hint": "for {case}: one token per patch, (N, L, D)",
        "unshuffle_with_mask_tokens.shuffled": "unshuffle_with_mask_tokens: the tokens are still in the shuffled order; "
        "gather with ids_restore to put them back",
        "unshuffle_with_mask_tokens.prepended": "unshuffle_with_mask_tokens: the mask tokens must come after the visible "
        "ones before unshuffling (in the shuffled order the kept tokens are first)",
        "unshuffle_with_mask_tokens.with_shuffle": "unshuffle_with_mask_tokens: unshuffle with ids_restore, not with the "
        "shuffle itself",
        "unshuffle_with_mask_tokens.no_mask_token": "unshuffle_with_mask_tokens: the visible tokens are right, but removed "
        "places must hold the mask token",
        "unshuffle_with_mask_tokens.wrong": "unshuffle_with_mask_tokens: wrong result for {case}; position i must hold "
        "patch i's visible token, or the mask token if patch i was removed",
        "masked_mse_loss.checked": "a scalar, mean over each patch, average over removed patches only",
        "masked_mse_loss.case": "pred and target of shape {shape}",
        "masked_mse_loss.not_scalar": "masked_mse_loss should return a scalar (a 0-d tensor), got shape {shape}",
        "masked_mse_loss.all_patches": "masked_mse_loss averages over all patches; only removed patches (mask == 1) count",
        "masked_mse_loss.visible": "masked_mse_loss averages over the visible patches; use mask == 1 (removed)",
        "masked_mse_loss.summed": "masked_mse_loss sums over each patch's values; take their mean",
        "masked_mse_loss.denominator": "masked_mse_loss divides by all N*L patches; divide by the number removed, "
        "mask.sum()",
        "masked_mse_loss.wrong": "masked_mse_loss: wrong value for {case}: expected {expected:.4f}, got {got:.4f}",
        "masked_mse_loss.visible_changed_case": "visible predictions changed",
        "masked_mse_loss.visible_matter": "masked_mse_loss: changing the predictions of visible patches changed the loss",
        "norm_pix_target.checked": "per-patch mean and unbiased variance, eps inside the square root, constant patches",
        "norm_pix_target.case": "targets of shape {shape} with a constant and a nearly flat patch",
        "norm_pix_target.shape_hint": "the target keeps its shape",
        "norm_pix_target.not_finite": "norm_pix_target: a constant patch gave inf or nan; add eps = 1e-6 to the variance",
        "norm_pix_target.biased": "norm_pix_target uses the biased variance; the official code uses the unbiased one "
        "(torch.var's default)",
        "norm_pix_target.eps_on_std": "norm_pix_target adds eps to the standard deviation; add it to the variance: "
        "(var + eps) ** 0.5",
        "norm_pix_target.whole_batch": "norm_pix_target normalizes over the whole batch; normalize each patch over its "
        "own values (dim=-1)",
        "norm_pix_target.across_patches": "norm_pix_target normalizes across patches (dim=1); normalize each patch over "
        "its own values (dim=-1)",
        "norm_pix_target.mean_only": "norm_pix_target only subtracts the mean; also divide by sqrt(var + eps)",
        "norm_pix_target.wrong": "norm_pix_target: wrong values for {case}; compute (t - mean) / sqrt(var + 1e-6) per "
        "patch",
    }
)

_UNSHUFFLE = "unshuffle_with_mask_tokens"


def _gather(seq: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.gather(seq, 1, ids[:, :, None].expand(-1, -1, seq.shape[-1]))


@exercise(_UNSHUFFLE)
def check_unshuffle_with_mask_tokens(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, length, dim, ratio in [(2, 16, 4, 0.75), (3, 9, 2, 0.5), (1, 49, 8, 0.9)]:
        x = torch.randn(n, length, dim, generator=g)
        noise = torch.rand(n, length, generator=g)
        x_vis, mask, ids_restore = random_masking(x, ratio, noise=noise)
        token = torch.randn(1, 1, dim, generator=g)
        case = say("unshuffle_with_mask_tokens.case", visible=x_vis.shape[1], length=length)
        out = expect_tensor(
            _UNSHUFFLE, call(_UNSHUFFLE, fn, x_vis.clone(), token.clone(), ids_restore.clone(), case=case)
        )
        expect_shape(_UNSHUFFLE, out, (n, length, dim), say("unshuffle_with_mask_tokens.shape_hint", case=case))
        expected = ref.unshuffle_with_mask_tokens(x_vis, token, ids_restore)
        if same(out, expected):
            continue
        keep = x_vis.shape[1]
        mask_tokens = token.expand(n, length - keep, dim)
        ids_shuffle = torch.argsort(noise, dim=1)
        if same(out, torch.cat([x_vis, mask_tokens], 1)):
            raise fail("unshuffle_with_mask_tokens.shuffled")
        if same(out, _gather(torch.cat([mask_tokens, x_vis], 1), ids_restore)):
            raise fail("unshuffle_with_mask_tokens.prepended")
        if same(out, _gather(torch.cat([x_vis, mask_tokens], 1), ids_shuffle)):
            raise fail("unshuffle_with_mask_tokens.with_shuffle")
        kept = mask == 0
        if same(out[kept], x[kept]):
            raise fail("unshuffle_with_mask_tokens.no_mask_token")
        raise fail("unshuffle_with_mask_tokens.wrong", case=case)


_LOSS = "masked_mse_loss"


@exercise(_LOSS)
def check_masked_mse_loss(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, length, size in [(2, 16, 12), (3, 10, 5), (1, 4, 48)]:
        pred = torch.randn(n, length, size, generator=g)
        target = torch.randn(n, length, size, generator=g)
        mask = (torch.rand(n, length, generator=g) < 0.7).float()
        mask[:, 0], mask[:, 1] = 1.0, 0.0  # at least one removed and one visible patch per sample
        case = say("masked_mse_loss.case", shape=(n, length, size))
        out = expect_tensor(_LOSS, call(_LOSS, fn, pred.clone(), target.clone(), mask.clone(), case=case))
        if out.numel() != 1 or out.ndim != 0:
            raise fail("masked_mse_loss.not_scalar", shape=tuple(out.shape))
        expected = ref.masked_mse_loss(pred, target, mask)
        if same(out, expected):
            continue
        per_patch = ((pred - target) ** 2).mean(-1)
        for wrong, problem in [
            (per_patch.mean(), "masked_mse_loss.all_patches"),
            ((per_patch * (1 - mask)).sum() / (1 - mask).sum(), "masked_mse_loss.visible"),
            ((((pred - target) ** 2).sum(-1) * mask).sum() / mask.sum(), "masked_mse_loss.summed"),
            ((per_patch * mask).sum() / (n * length), "masked_mse_loss.denominator"),
            ((per_patch * mask).mean(), "masked_mse_loss.denominator"),
        ]:
            if same(out, wrong):
                raise fail(problem)
        raise fail("masked_mse_loss.wrong", case=case, expected=expected.item(), got=out.item())

    # Predictions of visible patches must not matter.
    pred, target = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    mask = torch.tensor([[1.0, 0, 1, 0, 1, 0, 1, 0]] * 2)
    changed = pred + 10 * (1 - mask)[:, :, None]
    case = say("masked_mse_loss.visible_changed_case")
    a = call(_LOSS, fn, pred, target, mask, case=case)
    b = call(_LOSS, fn, changed, target, mask, case=case)
    if not same(a, b):
        raise fail("masked_mse_loss.visible_matter")


_NORM = "norm_pix_target"


@exercise(_NORM)
def check_norm_pix_target(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, length, size in [(2, 6, 12), (1, 4, 48), (3, 5, 3)]:
        target = torch.rand(n, length, size, generator=g) * 3 + 1
        target[0, 0] = 0.5  # a constant patch: variance 0
        target[0, 1] = 0.5 + 1e-3 * torch.randn(size, generator=g)  # a nearly flat one: eps matters
        case = say("norm_pix_target.case", shape=(n, length, size))
        out = expect_tensor(_NORM, call(_NORM, fn, target.clone(), case=case))
        expect_shape(_NORM, out, tuple(target.shape), say("norm_pix_target.shape_hint"))
        if not torch.isfinite(out).all():
            raise fail("norm_pix_target.not_finite")
        expected = ref.norm_pix_target(target)
        if same(out, expected, atol=1e-4):
            continue
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        biased = target.var(-1, keepdim=True, unbiased=False)
        for wrong, problem in [
            ((target - mean) / (biased + 1e-6) ** 0.5, "norm_pix_target.biased"),
            ((target - mean) / (var**0.5 + 1e-6), "norm_pix_target.eps_on_std"),
            ((target - target.mean()) / (target.var() + 1e-6) ** 0.5, "norm_pix_target.whole_batch"),
            (
                (target - target.mean(1, keepdim=True)) / (target.var(1, keepdim=True) + 1e-6) ** 0.5,
                "norm_pix_target.across_patches",
            ),
            (target - mean, "norm_pix_target.mean_only"),
        ]:
            if same(out, wrong, atol=1e-4):
                raise fail(problem)
        raise fail("norm_pix_target.wrong", case=case)
