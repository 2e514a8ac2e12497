"""Checks for lesson 05: the learning-rate schedule, and an epoch of steps that each set their lr."""

from __future__ import annotations

import math

import torch

from ..model.mae import MaskedAutoencoder
from ..train.recipe import lr_at as ref_lr_at
from ..train.recipe import make_adamw
from ..train.recipe import train_epoch as ref_train_epoch
from ._core import call, exercise, fail
from ._messages import define, say

MESSAGES = define(
    {
        "lr_at.checked": "linear warmup from 0, half-cosine decay to min_lr after warmup, edge cases",
        "lr_at.no_warmup": "no warmup: the lr must rise linearly from 0 over the warmup steps",
        "lr_at.warmup_off_by_one": "warmup off by one: lr_at(0) must be 0, then lr * step / warmup_steps",
        "lr_at.cosine_over_all": "the cosine runs over all steps; it starts after warmup: progress = (step - warmup) / "
        "(total - warmup)",
        "lr_at.ends_at_zero": "the decay ends at 0; it should end at min_lr",
        "lr_at.linear": "the decay is linear; it should follow half a cosine",
        "lr_at.case": "total_steps={total}, warmup_steps={warmup}, lr={lr}, min_lr={min_lr}",
        "lr_at.step_case": "step {step} of {case}",
        "lr_at.not_a_number": "lr_at should return a number, got {kind}",
        "lr_at.mistake": "lr_at: {problem} (first seen at step {step} with {case})",
        "lr_at.wrong": "lr_at: at step {step} with {case} expected {expected:.6g}, got {got:.6g}",
        "train_epoch.checked": "the lr of every step from the schedule, counted over the run, fresh gradients, the losses",
        "train_epoch.case": "first_step={first_step}, mask_ratio={mask_ratio}",
        "train_epoch.not_a_list": "train_epoch should return a list with one loss per batch (4 batches), got {got!r}",
        "train_epoch.tensors": "train_epoch returned tensors; return plain floats (loss.item()), one per step",
        "train_epoch.steps": "train_epoch called optimizer.step() {count} times for 4 batches; once per batch",
        "train_epoch.lr_never_set": "the lr was never set: set every group's lr from lr_of before each update",
        "train_epoch.lr_set_once": "the lr is set once, not at every step: lr_of(step) for each batch",
        "train_epoch.lr_off_by_one": "an off-by-one: the update of step k must use lr_of(k), set before optimizer.step()",
        "train_epoch.counted_from_zero": "steps are counted from 0 in every epoch; count from first_step, so the "
        "schedule continues",
        "train_epoch.lr_mistake": "train_epoch: {problem} (with {case})",
        "train_epoch.wrong_lrs": "train_epoch: the updates used lrs {got}, expected {expected} (with {case})",
        "train_epoch.piled_up": "train_epoch: gradients pile up from step to step; clear them with optimizer.zero_grad()",
        "train_epoch.mask_ratio": "train_epoch: the first loss is {got:.5f}, expected {expected:.5f}; pass "
        "mask_ratio={mask_ratio} to the model",
        "train_epoch.wrong_losses": "train_epoch: the losses are {got}, expected {expected} (with {case})",
    }
)

_LR = "lr_at"

_SCHEDULES = [  # (total_steps, warmup_steps, lr, min_lr)
    (100, 10, 1e-3, 0.0),
    (50, 0, 2e-4, 1e-5),  # no warmup at all
    (40, 40, 5e-4, 0.0),  # warmup for the whole run
    (30, 5, 1.5e-4, 1e-6),
]


def _curve(rule, total: int, warmup: int, lr: float, min_lr: float) -> list[float]:
    return [rule(step, total, warmup, lr, min_lr) for step in range(total + 1)]


def _warm_then(decay):
    """A schedule with the right linear warmup, then ``decay(step, total, warmup, lr, min_lr)``."""
    return lambda s, t, w, lr, m: lr * s / w if s < w else decay(s, t, w, lr, m)


def _progress(s: int, t: int, w: int) -> float:
    return min(1.0, (s - w) / max(1, t - w))


def _cosine(s: int, t: int, w: int, lr: float, m: float, progress: float) -> float:
    return m + (lr - m) * 0.5 * (1 + math.cos(math.pi * progress))


_MISTAKES = {  # the usual wrong schedules, to recognise them
    "lr_at.no_warmup": lambda s, t, w, lr, m: _cosine(s, t, w, lr, m, s / t),
    "lr_at.warmup_off_by_one": lambda s, t, w, lr, m: lr * (s + 1) / w if s < w else ref_lr_at(s, t, w, lr, m),
    "lr_at.cosine_over_all": _warm_then(lambda s, t, w, lr, m: _cosine(s, t, w, lr, m, s / t)),
    "lr_at.ends_at_zero": _warm_then(lambda s, t, w, lr, m: _cosine(s, t, w, lr, 0.0, _progress(s, t, w))),
    "lr_at.linear": _warm_then(lambda s, t, w, lr, m: lr - (lr - m) * _progress(s, t, w)),
}


def _close(a: list[float], b: list[float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


@exercise(_LR)
def check_lr_schedule(fn) -> None:
    for total, warmup, lr, min_lr in _SCHEDULES:
        case = say("lr_at.case", total=total, warmup=warmup, lr=lr, min_lr=min_lr)
        got = []
        for step in range(total + 1):
            value = call(_LR, fn, step, total, warmup, lr, min_lr, case=say("lr_at.step_case", step=step, case=case))
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if not isinstance(value, int | float):
                raise fail("lr_at.not_a_number", kind=type(value).__name__)
            got.append(float(value))
        expected = _curve(ref_lr_at, total, warmup, lr, min_lr)
        if _close(got, expected):
            continue
        first = next(i for i, (x, y) in enumerate(zip(got, expected, strict=True)) if not _close([x], [y]))
        for problem, rule in _MISTAKES.items():
            if _close(got, _curve(rule, total, warmup, lr, min_lr)):
                raise fail("lr_at.mistake", problem=say(problem), step=first, case=case)
        raise fail("lr_at.wrong", step=first, case=case, expected=expected[first], got=got[first])


_EPOCH = "train_epoch"


def _tiny_mae(seed: int) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )


class _Recorded(torch.optim.AdamW):
    """AdamW that remembers the lr of each of its updates, and whether the gradients were fresh."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lrs: list[float] = []

    def step(self, closure=None):
        self.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def _schedule(step: int) -> float:
    return 1e-3 * (1 + step % 7) / 7  # every step a different lr, so any shift shows


def _run(fn, first_step: int, mask_ratio: float, steps: int = 4) -> tuple[list, list[float], MaskedAutoencoder]:
    model = _tiny_mae(0)
    optimizer = _Recorded(make_adamw(model, lr=0.0).param_groups, lr=0.0, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(steps)]
    torch.manual_seed(100)  # the same masks for the learner's loop and the reference
    losses = fn(model, optimizer, iter(batches), _schedule, first_step, mask_ratio)
    return losses, optimizer.lrs, model


def _without_zero_grad(model, optimizer, batches, lr_of, first_step=0, mask_ratio=0.75):
    losses = []
    for i, imgs in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = lr_of(first_step + i)
        loss, _, _ = model(imgs, mask_ratio=mask_ratio)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@exercise(_EPOCH)
def check_train_epoch(fn) -> None:
    for first_step, mask_ratio in ((0, 0.75), (9, 0.5)):
        case = say("train_epoch.case", first_step=first_step, mask_ratio=mask_ratio)
        learner = lambda *args, case=case: call(_EPOCH, fn, *args, case=case)  # noqa: E731
        losses, lrs, model = _run(learner, first_step, mask_ratio)
        if not isinstance(losses, list | tuple) or len(losses) != 4:
            raise fail("train_epoch.not_a_list", got=losses)
        if any(isinstance(v, torch.Tensor) for v in losses):
            raise fail("train_epoch.tensors")
        if len(lrs) != 4:
            raise fail("train_epoch.steps", count=len(lrs))
        expected = [_schedule(first_step + i) for i in range(4)]
        if lrs != expected:
            diagnoses = {
                "train_epoch.lr_never_set": [0.0] * 4,
                "train_epoch.lr_set_once": [expected[0]] * 4,
                "train_epoch.lr_off_by_one": [_schedule(first_step + i + 1) for i in range(4)],
                "train_epoch.counted_from_zero": [_schedule(i) for i in range(4)],
            }
            for problem, wrong in diagnoses.items():
                if all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(lrs, wrong, strict=True)):
                    raise fail("train_epoch.lr_mistake", problem=say(problem), case=case)
            raise fail(
                "train_epoch.wrong_lrs",
                got=[f"{v:.2e}" for v in lrs],
                expected=[f"{v:.2e}" for v in expected],
                case=case,
            )
        ref_losses, _, ref_model = _run(ref_train_epoch, first_step, mask_ratio)
        if all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(losses, ref_losses, strict=True)):
            same = all(
                torch.allclose(p, q, atol=1e-6) for p, q in zip(model.parameters(), ref_model.parameters(), strict=True)
            )
            if same:
                continue
        piled, _, _ = _run(_without_zero_grad, first_step, mask_ratio)
        if all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(losses, piled, strict=True)):
            raise fail("train_epoch.piled_up")
        if not math.isclose(losses[0], ref_losses[0], rel_tol=1e-5):
            raise fail("train_epoch.mask_ratio", got=losses[0], expected=ref_losses[0], mask_ratio=mask_ratio)
        raise fail(
            "train_epoch.wrong_losses",
            got=[round(v, 5) for v in losses],
            expected=[round(v, 5) for v in ref_losses],
            case=case,
        )
