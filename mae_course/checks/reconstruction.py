"""Checks for lesson 06: pasting the visible patches back, and drawing normalized predictions."""

from __future__ import annotations

import torch

from ..seeing.reconstruction import denormalize_patches as ref_denormalize
from ..seeing.reconstruction import paste_visible as ref_paste
from ._core import call, exercise, expect_shape, expect_tensor, fail, same
from ._messages import define, say

MESSAGES = define(
    {
        "paste_visible.checked": "the prediction in removed patches, the original in visible ones, shapes, dtypes of "
        "the mask",
        "paste_visible.case": "patches of shape {shape} and a {dtype} mask",
        "paste_visible.shape_hint": "the result has one patch per token, like pred",
        "paste_visible.swapped": "paste_visible: the roles are swapped; removed patches (mask == 1) take the prediction, "
        "visible ones the original",
        "paste_visible.all_prediction": "paste_visible returned the prediction everywhere; keep the original where "
        "mask == 0",
        "paste_visible.all_original": "paste_visible returned the original everywhere; use the prediction where "
        "mask == 1",
        "paste_visible.wrong": "paste_visible: wrong patches for {case}; broadcast the (N, L) mask over the last axis",
        "denormalize_patches.checked": "each target patch's mean and sqrt(unbiased var + eps), nearly flat patches too, "
        "the inverse of norm_pix_target",
        "denormalize_patches.biased": "denormalize_patches uses the biased variance; norm_pix_target used the unbiased one",
        "denormalize_patches.no_mean": "denormalize_patches forgets to add the patch's mean back",
        "denormalize_patches.normalizes": "denormalize_patches normalizes again; this is the inverse: multiply by "
        "sqrt(var + eps), then add the mean",
        "denormalize_patches.own_stats": "denormalize_patches takes the statistics of the prediction; take them from the "
        "target patch",
        "denormalize_patches.mean_first": "denormalize_patches adds the mean before scaling; scale first, then add the "
        "mean",
        "denormalize_patches.eps_on_std": "denormalize_patches adds eps to the standard deviation; add it to the "
        "variance, as norm_pix_target did: sqrt(var + eps). On a flat patch (std 0) "
        "they differ a thousandfold: 1e-6 against sqrt(1e-6) = 1e-3",
        "denormalize_patches.no_eps": "denormalize_patches leaves out eps: multiply by sqrt(var + eps), the scale "
        "norm_pix_target divided by; on a flat patch (std 0) that is sqrt(1e-6) = 1e-3, "
        "not 0",
        "denormalize_patches.nearly_flat": ", some nearly flat (std 1e-4 or 0)",
        "denormalize_patches.case": "patches of shape {shape}{special}",
        "denormalize_patches.shape_hint": "one patch per token, like pred",
        "denormalize_patches.wrong": "denormalize_patches: wrong values for {case}; compute pred * sqrt(var + 1e-6) + "
        "mean, per target patch",
        "denormalize_patches.round_trip_case": "a normalized target",
        "denormalize_patches.round_trip": "denormalize_patches(norm_pix_target(t), t) should give t back",
    }
)

_PASTE = "paste_visible"


@exercise(_PASTE)
def check_paste_visible(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, length, size in [(2, 16, 12), (1, 64, 48), (3, 9, 3)]:
        pred, target = torch.randn(n, length, size, generator=g), torch.randn(n, length, size, generator=g)
        mask = (torch.rand(n, length, generator=g) < 0.75).float()
        mask[:, 0], mask[:, 1] = 1.0, 0.0
        for kind in (mask, mask.bool()):
            case = say("paste_visible.case", shape=(n, length, size), dtype=kind.dtype)
            out = expect_tensor(_PASTE, call(_PASTE, fn, pred.clone(), target.clone(), kind.clone(), case=case))
            expect_shape(_PASTE, out, (n, length, size), say("paste_visible.shape_hint"))
            if same(out, ref_paste(pred, target, mask)):
                continue
            if same(out, ref_paste(target, pred, mask)):
                raise fail("paste_visible.swapped")
            if same(out, pred):
                raise fail("paste_visible.all_prediction")
            if same(out, target):
                raise fail("paste_visible.all_original")
            raise fail("paste_visible.wrong", case=case)


_DENORM = "denormalize_patches"


def _denorm_mistakes(pred: torch.Tensor, target: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """The usual wrong inverses, each with what to tell the learner (a message id). The last two agree with the right
    one to 1e-6 on patches of variance ~1: only nearly flat patches tell them apart."""
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    return [
        (pred * (target.var(-1, keepdim=True, unbiased=False) + 1e-6) ** 0.5 + mean, "denormalize_patches.biased"),
        (pred * (var + 1e-6) ** 0.5, "denormalize_patches.no_mean"),
        ((pred - mean) / (var + 1e-6) ** 0.5, "denormalize_patches.normalizes"),
        (
            pred * (pred.var(-1, keepdim=True) + 1e-6) ** 0.5 + pred.mean(-1, keepdim=True),
            "denormalize_patches.own_stats",
        ),
        ((pred + mean) * (var + 1e-6) ** 0.5, "denormalize_patches.mean_first"),
        (pred * (var**0.5 + 1e-6) + mean, "denormalize_patches.eps_on_std"),
        (pred * var**0.5 + mean, "denormalize_patches.no_eps"),
    ]


def _nearly_flat(g: torch.Generator) -> torch.Tensor:
    """Patches near 0, so that a tolerance relative to the values tells a scale of 1e-6 from 0 (an
    absolute one of 1e-4 would not): a constant one (std 0), two with a std of 1e-4, an ordinary one."""
    target = torch.rand(1, 4, 12, generator=g) * 4 - 1
    target[0, 0] = 0.0
    target[0, 1:3] = 1e-4 * torch.randn(2, 12, generator=g)
    return target


@exercise(_DENORM)
def check_denormalize_patches(fn) -> None:
    from ..model.decoder import norm_pix_target

    g = torch.Generator().manual_seed(0)
    cases = [  # (target, tolerance, what is special about it)
        (torch.rand(2, 8, 12, generator=g) * 4 - 1, {"atol": 1e-4}, ""),
        (torch.rand(1, 16, 48, generator=g) * 4 - 1, {"atol": 1e-4}, ""),
        (_nearly_flat(g), {"atol": 1e-9, "rtol": 1e-3}, say("denormalize_patches.nearly_flat")),
    ]
    for target, tolerance, special in cases:
        pred = torch.randn(target.shape, generator=g)
        case = say("denormalize_patches.case", shape=tuple(target.shape), special=special)
        out = expect_tensor(_DENORM, call(_DENORM, fn, pred.clone(), target.clone(), case=case))
        expect_shape(_DENORM, out, tuple(target.shape), say("denormalize_patches.shape_hint"))
        if same(out, ref_denormalize(pred, target), **tolerance):
            continue
        for wrong, problem in _denorm_mistakes(pred, target):
            if same(out, wrong, **tolerance):
                raise fail(problem)
        raise fail("denormalize_patches.wrong", case=case)
    # the round trip: denormalizing a normalized patch gives it back
    target = torch.rand(2, 4, 12, generator=g)
    back = call(_DENORM, fn, norm_pix_target(target), target, case=say("denormalize_patches.round_trip_case"))
    if not same(back, target, atol=1e-4):
        raise fail("denormalize_patches.round_trip")
