"""Checks for lesson 05: the learning-rate schedule and one training step."""

from __future__ import annotations

import math

import torch

from ..model.mae import MaskedAutoencoder
from ..train.recipe import lr_at as ref_lr_at
from ..train.recipe import make_adamw
from ..train.recipe import train_step as ref_train_step
from ._core import CheckFailed, call, exercise

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
    "no warmup: the lr must rise linearly from 0 over the warmup steps": (
        lambda s, t, w, lr, m: _cosine(s, t, w, lr, m, s / t)
    ),
    "warmup off by one: lr_at(0) must be 0, then lr * step / warmup_steps": (
        lambda s, t, w, lr, m: lr * (s + 1) / w if s < w else ref_lr_at(s, t, w, lr, m)
    ),
    "the cosine runs over all steps; it starts after warmup: progress = (step - warmup) / (total - warmup)": (
        _warm_then(lambda s, t, w, lr, m: _cosine(s, t, w, lr, m, s / t))
    ),
    "the decay ends at 0; it should end at min_lr": (
        _warm_then(lambda s, t, w, lr, m: _cosine(s, t, w, lr, 0.0, _progress(s, t, w)))
    ),
    "the decay is linear; it should follow half a cosine": (
        _warm_then(lambda s, t, w, lr, m: lr - (lr - m) * _progress(s, t, w))
    ),
}


def _close(a: list[float], b: list[float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


@exercise(_LR, "linear warmup from 0, half-cosine decay to min_lr after warmup, edge cases")
def check_lr_schedule(fn) -> None:
    for total, warmup, lr, min_lr in _SCHEDULES:
        case = f"total_steps={total}, warmup_steps={warmup}, lr={lr}, min_lr={min_lr}"
        got = []
        for step in range(total + 1):
            value = call(_LR, fn, step, total, warmup, lr, min_lr, case=f"step {step} of {case}")
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if not isinstance(value, int | float):
                raise CheckFailed(f"{_LR} should return a number, got {type(value).__name__}")
            got.append(float(value))
        expected = _curve(ref_lr_at, total, warmup, lr, min_lr)
        if _close(got, expected):
            continue
        first = next(i for i, (x, y) in enumerate(zip(got, expected, strict=True)) if not _close([x], [y]))
        for problem, rule in _MISTAKES.items():
            if _close(got, _curve(rule, total, warmup, lr, min_lr)):
                raise CheckFailed(f"{_LR}: {problem} (first seen at step {first} with {case})")
        raise CheckFailed(f"{_LR}: at step {first} with {case} expected {expected[first]:.6g}, got {got[first]:.6g}")


_STEP = "train_step"


def _tiny_mae(seed: int) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(
        img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
        decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
    )  # fmt: skip


def _run(step_fn, steps: int, mask_ratio: float) -> tuple[list, MaskedAutoencoder]:
    model = _tiny_mae(0)
    optimizer = make_adamw(model, lr=1e-2, weight_decay=0.05)
    imgs = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    losses = []
    for i in range(steps):
        torch.manual_seed(100 + i)  # the same masks for the learner's step and the reference
        losses.append(step_fn(model, optimizer, imgs, mask_ratio))
    return losses, model


def _no_zero_grad(model, optimizer, imgs, mask_ratio):
    loss, _, _ = model(imgs, mask_ratio=mask_ratio)
    loss.backward()
    optimizer.step()
    return loss.item()


@exercise(_STEP, "forward, fresh gradients, backward, update, the mask ratio, the returned loss")
def check_train_step(fn) -> None:
    for mask_ratio in (0.75, 0.5):
        ref_losses, ref_model = _run(ref_train_step, 3, mask_ratio)
        learner = lambda m, o, x, r: call(_STEP, fn, m, o, x, r, case=f"mask_ratio={r}")  # noqa: E731
        losses, model = _run(learner, 3, mask_ratio)
        for value in losses:
            if isinstance(value, torch.Tensor):
                raise CheckFailed(f"{_STEP} returned a tensor; return loss.item(), a plain float for logging")
            if not isinstance(value, int | float):
                raise CheckFailed(f"{_STEP} should return the loss as a float, got {type(value).__name__}")
        initial = _tiny_mae(0)
        moved = any(not torch.equal(p, q) for p, q in zip(model.parameters(), initial.parameters(), strict=True))
        if not moved:
            if all(p.grad is None for p in model.parameters()):
                raise CheckFailed(
                    f"{_STEP}: the weights never changed and no gradient was computed; call loss.backward()"
                )
            raise CheckFailed(f"{_STEP}: the weights never changed; call optimizer.step() after loss.backward()")
        if not math.isclose(losses[0], ref_losses[0], rel_tol=1e-5):
            raise CheckFailed(
                f"{_STEP}: the first loss is {losses[0]:.5f}, expected {ref_losses[0]:.5f}"
                + (f"; pass mask_ratio={mask_ratio} to the model" if mask_ratio != 0.75 else "")
            )
        same_weights = all(
            torch.allclose(p, q, atol=1e-6) for p, q in zip(model.parameters(), ref_model.parameters(), strict=True)
        )
        if same_weights and all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(losses, ref_losses, strict=True)):
            continue
        no_zero_losses, _ = _run(_no_zero_grad, 3, mask_ratio)
        if all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(losses, no_zero_losses, strict=True)):
            raise CheckFailed(
                f"{_STEP}: gradients pile up from step to step; clear them with optimizer.zero_grad() in every step"
            )
        raise CheckFailed(
            f"{_STEP}: after 3 steps the losses are {[round(v, 5) for v in losses]}, expected "
            f"{[round(v, 5) for v in ref_losses]}"
        )
