"""Lesson 05: the pretraining recipe of the paper (appendix A.1), in its plainest form.

    lr = blr x effective batch / 256           scaled_lr: the linear scaling rule
    per-iteration warmup, then half a cosine   lr_at and Schedule: the lr of every step
    AdamW (0.9, 0.95), weight decay 0.05       make_adamw: decay on weight matrices only
    one step: forward, zero_grad, backward, step     train_step
    an epoch of steps, each with its own lr           train_epoch

:func:`~mae_course.train.engine.train_one_epoch` runs the same recipe with gradient
accumulation, mixed precision and several processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DataError


def scaled_lr(blr: float, effective_batch: int) -> float:
    """The linear scaling rule of the paper: lr = base lr x effective batch / 256."""
    return blr * effective_batch / 256


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0) -> float:
    """The learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    Rises linearly from 0 over ``warmup_steps``, then follows half a cosine from ``lr``
    down to ``min_lr`` at ``total_steps``.
    """
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_scale`` (1 unless layer-wise decay set one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@dataclass(frozen=True)
class Schedule:
    """How many optimizer steps a run makes, and the learning rate of each.

    One step consumes ``batch_size x accum_iter`` images on each of ``world_size`` processes: the
    effective batch. The peak lr is ``lr`` when given, else ``blr x effective batch / 256``; the
    lr rises linearly over the warmup steps, then follows half a cosine down to ``min_lr``.
    """

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    effective_batch: int
    peak_lr: float
    min_lr: float = 0.0

    @classmethod
    def plan(
        cls,
        images: int,
        batch_size: int,
        accum_iter: int,
        world_size: int,
        epochs: int,
        warmup_epochs: float,
        blr: float,
        lr: float | None = None,
        min_lr: float = 0.0,
        what: str = "the dataset",
    ) -> Schedule:
        """The schedule of ``epochs`` passes over ``images`` images (shared by the processes);
        too few images for one effective batch is a DataError, a ``min_lr`` above the peak lr a ConfigError."""
        effective_batch = batch_size * accum_iter * world_size
        steps_per_epoch = images // world_size // batch_size // accum_iter
        if steps_per_epoch == 0:
            raise DataError(
                f"{what} has {images} images, fewer than one effective batch of {effective_batch} "
                f"(batch {batch_size} x accum {accum_iter} x {world_size} processes); use a smaller --batch-size"
            )
        peak = lr if lr is not None else scaled_lr(blr, effective_batch)
        if min_lr > peak:  # the cosine would rise from the peak to min_lr
            rule = "--lr" if lr is not None else f"--blr {blr:g} x effective batch {effective_batch} / 256"
            raise ConfigError(
                f"min lr {min_lr:g} is above the peak lr {peak:g} ({rule}), so the lr would rise instead of "
                "decaying; give a lower --min-lr, or a higher --blr or --lr"
            )
        return cls(
            steps_per_epoch,
            epochs * steps_per_epoch,
            round(warmup_epochs * steps_per_epoch),
            effective_batch,
            peak,
            min_lr,
        )

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)


NO_DECAY_NAMES = ("cls_token", "mask_token", "encoder_mask_token", "pos_embed", "decoder_pos_embed")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into two groups: weight matrices (decayed) and the rest.

    Biases, LayerNorm parameters (every 1-D tensor) and the learned tokens get no weight
    decay; frozen parameters (the fixed positional tables) are left out.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "for-loop")
OPTIMIZER_IMPL_HELP = "AdamW kernel: auto = fused on GPU and CPU, foreach elsewhere"


def adamw_impl_flags(impl: str, device: torch.device) -> dict[str, bool]:
    """The ``torch.optim.AdamW`` keyword arguments that select an implementation.

    All three compute the same update (up to float rounding), only the speed differs:

    * "for-loop": one small kernel per parameter tensor per operation (~10 per tensor);
    * "foreach": the same operations on lists of tensors, a few launches for all of them;
    * "fused": the whole update of all tensors in one kernel (CUDA, and the CPU since torch 2.4);
      with a GradScaler it also unscales and skips steps inside the kernel, without a host sync.

    "auto" is fused on CUDA and CPU (on a 2-core CPU, 4x faster than the for-loop for the mini
    model), foreach elsewhere.
    """
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(f"unknown optimizer implementation {impl!r}; choose one of {', '.join(OPTIMIZER_IMPLS)}")
    if impl == "auto":
        impl = "fused" if device.type in ("cuda", "cpu") else "foreach"
    return {"fused": impl == "fused", "foreach": impl == "foreach"}


def make_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.95),
    impl: str = "auto",
    groups: list[dict[str, Any]] | None = None,
) -> torch.optim.AdamW:
    """The course's AdamW, for pretraining and fine-tuning alike.

    By default it has the pretraining recipe's betas (0.9, 0.95) and decay groups
    (:func:`decay_groups`); fine-tuning gives its betas and its layer-wise lr-decay ``groups``.
    ``impl`` picks the kernel (see :func:`adamw_impl_flags`): "auto", "fused", "foreach" or
    "for-loop"; "auto" is fused on the model's device when it is a GPU or the CPU.
    """
    flags = adamw_impl_flags(impl, next(model.parameters()).device)
    groups = decay_groups(model, weight_decay) if groups is None else groups
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **flags)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, imgs: torch.Tensor, mask_ratio: float = 0.75
) -> float:
    """One optimization step of MAE pretraining, in its plainest form; returns the loss.

    Forward (mask, encode, decode, loss on removed patches), clear the old gradients,
    backpropagate, update. The course's training loop does the same with gradient accumulation,
    mixed precision and several processes (:mod:`mae_course.train.step`), and reads the loss
    back only when it logs.

    Args:
        model: a MaskedAutoencoder in training mode.
        optimizer: e.g. from :func:`make_adamw`.
        imgs: (N, C, H, W) normalized images.
    """
    loss, _, _ = model(imgs, mask_ratio=mask_ratio)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[torch.Tensor],
    lr_of: Callable[[int], float],
    first_step: int = 0,
    mask_ratio: float = 0.75,
) -> list[float]:
    """Train on every batch, the schedule setting the lr of each optimizer step; returns the losses.

    Step ``first_step + i`` (counted over the whole run, so the schedule continues from one epoch
    to the next) trains on the i-th batch with ``lr_of(first_step + i)``, set on every parameter
    group (times the group's ``lr_scale``) *before* the update.

    Args:
        batches: (N, C, H, W) normalized images, one tensor per step.
        lr_of: the schedule, e.g. ``lambda step: lr_at(step, total, warmup, peak)``.
    """
    losses = []
    for i, imgs in enumerate(batches):
        set_lr(optimizer, lr_of(first_step + i))
        losses.append(train_step(model, optimizer, imgs, mask_ratio))
    return losses
