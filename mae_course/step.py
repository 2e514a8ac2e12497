"""The training step, plain or fast: forward, backward and AdamW update, built once.

    step = make_train_step(model, optimizer, amp="auto", compile=True)
    for imgs, _ in loader:
        loss = step(imgs.to(device, non_blocking=True), mask_ratio=0.75)  # a tensor, still on the device

:class:`~mae_course.pretrain.Pretrainer` runs exactly this step on every batch, and the
benchmarks time it. The speed options change how the step computes, not what: each gives the
losses of the plain step, up to rounding (``tests/test_speed.py`` checks it).

* ``amp``: mixed precision (:func:`~mae_course.training.autocast_for`). "auto" is bf16 autocast
  on GPUs that have it (no loss scaler needed: bf16 has float32's range), fp16 with a GradScaler
  on older GPUs, and none on the CPU. The matrix products then run in 16 bits, on tensor cores.
* ``compile``: :func:`torch.compile` the model. Its forward is traced into a graph, and
  AOTAutograd derives the backward graph; both are fused into fewer, larger kernels. The first
  step is slow (compilation: a minute or more for ViT-L); the following ones are faster. Only the
  step calls the compiled module: the model itself stays eager (its state_dict keys, the figures).
* ``grad_checkpointing``: :meth:`~mae_course.mae.MaskedAutoencoder.set_grad_checkpointing`, for
  models or batches whose activations do not fit (ViT-H), at about 30% more compute.
* ``distributed``: wrap the (compiled) model in DistributedDataParallel with explicit gradient
  buckets (:func:`~mae_course.distributed.wrap_ddp`). PyTorch recommends compiling the inner
  module and wrapping that, as here; dynamo then splits the graph at the bucket boundaries, so
  the all-reduce still overlaps the backward pass.
* The AdamW kernel (fused, foreach or for-loop) is chosen when the optimizer is built:
  :func:`~mae_course.optim.make_adamw`.

No host syncs: nothing in the step reads a value back from the device, branches on one, or
waits for the GPU, so the CPU queues the next steps while the GPU computes. The loss comes back
as a device tensor for the caller to read when it needs it (the trainer: every ``log_every``
steps). Two exceptions, outside the default path: fp16 with a non-fused optimizer (GradScaler
reads whether the gradients overflowed before stepping) and block or grid mask sampling (their
masks are drawn on the CPU and copied over).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import DEFAULT_BUCKET_CAP_MB, wrap_ddp
from .training import autocast_for


@dataclass
class TrainStep:
    """One optimization step, ready to call; made by :func:`make_train_step`.

    ``step(imgs, mask_ratio)`` does a whole step. Gradient accumulation uses the two halves:
    :meth:`forward_backward` on each micro-batch, then :meth:`update` once.
    """

    module: nn.Module  # what the step calls: the model, compiled and/or inside DDP
    optimizer: torch.optim.Optimizer
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    accum_iter: int = 1  # micro-batches per update: each gradient is divided by it

    def __call__(self, imgs: torch.Tensor, mask_ratio: float = 0.75) -> torch.Tensor:
        """Forward, backward and update on (N, C, H, W) images; returns the loss, a () tensor on the device."""
        loss = self.forward_backward(imgs, mask_ratio)
        self.update()
        return loss

    def forward_backward(self, imgs: torch.Tensor, mask_ratio: float = 0.75, sync: bool = True) -> torch.Tensor:
        """Add the gradient of ``loss / accum_iter`` of one micro-batch; returns the (unscaled) loss, detached.

        ``sync=False`` skips DDP's all-reduce: for every micro-batch of an accumulation window
        but the last, whose backward pass then all-reduces the summed gradients once.
        """
        skip_sync = not sync and isinstance(self.module, DistributedDataParallel)
        with self.module.no_sync() if skip_sync else contextlib.nullcontext():
            with self.autocast():
                loss, _, _ = self.module(imgs, mask_ratio=mask_ratio)
            scaled = loss / self.accum_iter
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach()

    def update(self) -> None:
        """Apply the accumulated gradients (through the loss scaler with fp16), then drop them."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the update if the fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # freed, not zero-filled: the next backward writes them afresh


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    amp: str = "auto",
    compile: bool = False,
    grad_checkpointing: bool | None = None,
    distributed: bool = False,
    bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB,
    accum_iter: int = 1,
) -> TrainStep:
    """Build the training step of ``model`` (already on its device) with ``optimizer``.

    Args:
        model: a :class:`MaskedAutoencoder`, or any module called the same way:
            ``model(imgs, mask_ratio=r) -> (loss, pred, mask)``.
        amp: "auto", "bf16", "fp16" or "none" (see :func:`~mae_course.training.autocast_for`).
        compile: call the model through :func:`torch.compile`.
        grad_checkpointing: set on the model (:meth:`~mae_course.mae.MaskedAutoencoder.set_grad_checkpointing`);
            None leaves the model as it is.
        distributed: wrap in DDP (the process group must be initialised) with buckets of
            ``bucket_cap_mb`` megabytes.
        accum_iter: micro-batches per optimizer update, for :meth:`TrainStep.forward_backward`.

    Returns:
        a :class:`TrainStep`: ``step(imgs, mask_ratio) -> loss`` (a () tensor, not read back).
    """
    device = next(model.parameters()).device
    if grad_checkpointing is not None:
        model.set_grad_checkpointing(grad_checkpointing)
    autocast, needs_scaler = autocast_for(device, amp)
    module = torch.compile(model) if compile else model
    if distributed:
        module = wrap_ddp(module, bucket_cap_mb)
    scaler = torch.amp.GradScaler(device.type) if needs_scaler else None
    return TrainStep(module, optimizer, autocast, scaler, accum_iter)
