"""Lesson 09: the training step, plain or fast: forward, backward and update, built once.

    step = make_train_step(model, optimizer, mask_ratio=0.75, amp="auto", compile=True)
    for imgs, _ in loader:
        loss = step(imgs.to(device, non_blocking=True))  # a tensor, still on the device

The training loop (:func:`~mae_course.train.engine.train_one_epoch`) runs exactly this step on
every batch, for pretraining and for classification alike (a ``loss_fn`` says how a batch
becomes a loss), and the benchmarks time it. The speed options change how the step computes, not what: each gives the
losses of the plain step, up to rounding (``tests/test_speed.py`` checks it).

* ``amp``: mixed precision (:func:`autocast_for`). "auto" is bf16 autocast on GPUs whose tensor
  cores have it, compute capability 8.0 and up (no loss scaler needed: bf16 has float32's range),
  fp16 with a GradScaler on older GPUs (Colab's T4, V100), and none on the CPU
  (:func:`auto_precision`). The matrix products then run in 16 bits, on tensor cores.
* ``compile``: :func:`torch.compile` each Transformer block, in place (:func:`compile_blocks`,
  "regional compilation"). A block's forward is traced into a graph, and AOTAutograd derives the
  backward graph; both are fused into fewer, larger kernels. A ViT repeats one block: compiled
  one by one, the blocks of a stack share one compiled graph, so the first step takes seconds,
  not the minute or more a whole ViT-L takes to compile, for most of the speed (the patch
  embedding, the masking and the loss, outside the blocks, stay eager). The state_dict keys do
  not change. One graph per input shape (``dynamic=False``): batches keep their size in training.
* ``grad_checkpointing``: :meth:`~mae_course.model.mae.MaskedAutoencoder.set_grad_checkpointing`, for
  models or batches whose activations do not fit (ViT-H), at about 30% more compute.
* ``distributed``: wrap the model (its blocks compiled) in DistributedDataParallel with explicit
  gradient buckets (:func:`~mae_course.train.distributed.wrap_ddp`). PyTorch recommends compiling
  inside and wrapping that, as here: DDP's hooks fire as each compiled block's gradients are
  ready, so the all-reduce still overlaps the backward pass.
* The AdamW kernel (fused, foreach or for-loop) is chosen when the optimizer is built:
  :func:`~mae_course.train.recipe.make_adamw`.

No host syncs: nothing in the step reads a value back from the device, branches on one, or
waits for the GPU, so the CPU queues the next steps while the GPU computes. The loss comes back
as a device tensor for the caller to read when it needs it (the loop: every ``log_every``
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

from ..errors import ConfigError
from .distributed import DEFAULT_BUCKET_CAP_MB, grad_disagreement, wrap_ddp

AMP_MODES = ("auto", "bf16", "fp16", "none")


def auto_precision(device_type: str, capability: tuple[int, int] | None = None) -> str:
    """What ``amp="auto"`` means on a device: a pure function of its type and compute capability.

    * CUDA with compute capability 8.0 or higher (A100, L4, H100, H200, RTX 30xx and later):
      "bf16", native on their tensor cores; float32's range, so no loss scaler.
    * older CUDA GPUs (T4 7.5, the free Colab GPU; V100 7.0): "fp16" with a GradScaler. Their tensor
      cores have no bf16; ``torch.cuda.is_bf16_supported()`` still says True there because bf16 can be
      emulated, and emulated bf16 is slower than float32.
    * anything else (the CPU, Apple's MPS): "none", full precision, unless asked otherwise.
    """
    if device_type != "cuda":
        return "none"
    if capability is None:
        raise ValueError("a CUDA device needs its compute capability")
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def resolve_amp(device: torch.device, amp: str) -> str:
    """``amp`` with "auto" resolved for ``device`` (:func:`auto_precision`, reading the GPU's capability)."""
    if amp not in AMP_MODES:
        raise ConfigError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if amp != "auto":
        return amp
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return auto_precision(device.type, capability)


def autocast_for(device: torch.device, amp: str) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """Mixed precision for the forward pass: ``(context factory, needs a GradScaler)``.

    Under autocast, matrix products and convolutions run in 16 bits while reductions, norms and
    the loss stay in float32; the weights and the optimizer stay in float32. "auto" is
    :func:`auto_precision`: bf16 on GPUs of compute capability 8.0 or higher, fp16 with a loss
    scaler on older ones (fp16 gradients would underflow to 0 without one), full precision on the
    CPU. "bf16" and "fp16" work on the CPU too (``torch.autocast("cpu", ...)``): fast only on CPUs
    with 16-bit units, but they let the tests check mixed precision without a GPU.
    """
    amp = resolve_amp(device, amp)
    if amp == "none":
        return contextlib.nullcontext, False
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), amp == "fp16"


def mae_loss(mask_ratio: float = 0.75) -> Callable[..., torch.Tensor]:
    """The pretraining objective as a step's ``loss_fn``: ``module(imgs, mask_ratio)``'s loss."""

    def loss_fn(module: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
        loss, _, _ = module(imgs, mask_ratio=mask_ratio)
        return loss

    return loss_fn


@dataclass
class TrainStep:
    """One optimization step, ready to call; made by :func:`make_train_step`.

    ``step(*inputs)`` does a whole step: ``loss_fn(module, *inputs)`` under autocast, backward,
    update. The training loop uses the two halves, for gradient accumulation:
    :meth:`forward_backward` on each micro-batch, then :meth:`update` once.
    """

    module: nn.Module  # what the step calls: the model (or a loss around it), perhaps inside DDP
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[..., torch.Tensor]  # (module, *inputs) -> the loss, a () tensor
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    accum_iter: int = 1  # micro-batches per update: each gradient is divided by it
    grad_sync_check: bool = False  # debugging torchrun: before each update, compare the processes' gradients
    grad_sync_diff: float = 0.0  # ... the largest difference seen (0 when DDP works)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Forward, backward and update on one batch; returns the loss, a () tensor on the device."""
        loss = self.forward_backward(*inputs)
        self.update()
        return loss

    def forward_backward(self, *inputs: torch.Tensor, sync: bool = True) -> torch.Tensor:
        """Add the gradient of ``loss / accum_iter`` of one micro-batch; returns the (unscaled) loss, detached.

        ``sync=False`` skips DDP's all-reduce: for every micro-batch of an accumulation window
        but the last, whose backward pass then all-reduces the summed gradients once.
        """
        skip_sync = not sync and isinstance(self.module, DistributedDataParallel)
        with self.module.no_sync() if skip_sync else contextlib.nullcontext():
            with self.autocast():
                loss = self.loss_fn(self.module, *inputs)
            scaled = loss / self.accum_iter
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach()

    def update(self) -> None:
        """Apply the accumulated gradients (through the loss scaler with fp16), then drop them."""
        if self.grad_sync_check:  # reads every gradient norm back: for debugging only
            self.grad_sync_diff = max(self.grad_sync_diff, grad_disagreement(self.module))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the update if the fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # freed, not zero-filled: the next backward writes them afresh


def compile_blocks(model: nn.Module, dynamic: bool = False) -> int:
    """:func:`torch.compile` every Transformer block of ``model`` in place; returns how many.

    The stacks of blocks are found as ``nn.ModuleList`` s whose modules are all of one class: ours
    (``blocks``, ``decoder_blocks``) and those of transformers' ViTMAE (``vit.encoder.layer``,
    ``decoder.decoder_layers``) alike, so that a benchmark compiles both the same way. The blocks of
    a stack differ only in their weights, which the compiled graph takes as inputs: one compilation
    serves them all. A model without such a stack is compiled whole.
    """
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) and len({type(b) for b in m}) == 1]
    for stack in stacks:
        for block in stack:
            block.compile(dynamic=dynamic)
    if not stacks:
        model.compile(dynamic=dynamic)
    return sum(len(stack) for stack in stacks)


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    mask_ratio: float = 0.75,
    amp: str = "auto",
    compile: bool = False,
    grad_checkpointing: bool | None = None,
    distributed: bool = False,
    bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB,
    accum_iter: int = 1,
) -> TrainStep:
    """Build the training step of ``model`` (already on its device) with ``optimizer``.

    Args:
        model: the module the step calls: a :class:`~mae_course.model.mae.MaskedAutoencoder`, or
            whatever ``loss_fn`` takes.
        loss_fn: ``(module, *inputs) -> loss``; by default MAE's pretraining loss at ``mask_ratio``
            (:func:`mae_loss`), so that ``step(imgs)`` is one pretraining step.
        amp: "auto", "bf16", "fp16" or "none" (see :func:`autocast_for`).
        compile: compile the model's Transformer blocks (:func:`compile_blocks`, in place).
        grad_checkpointing: set on the model (:meth:`~mae_course.model.mae.MaskedAutoencoder.set_grad_checkpointing`);
            None leaves the model as it is.
        distributed: wrap in DDP (the process group must be initialised) with buckets of
            ``bucket_cap_mb`` megabytes.
        accum_iter: micro-batches per optimizer update, for :meth:`TrainStep.forward_backward`.

    Returns:
        a :class:`TrainStep`: ``step(*inputs) -> loss`` (a () tensor, not read back).
    """
    device = next(model.parameters()).device
    if grad_checkpointing is not None:
        model.set_grad_checkpointing(grad_checkpointing)
    autocast, needs_scaler = autocast_for(device, amp)
    if compile:
        compile_blocks(model)
    module = wrap_ddp(model, bucket_cap_mb) if distributed else model
    scaler = torch.amp.GradScaler(device.type) if needs_scaler else None
    return TrainStep(module, optimizer, loss_fn or mae_loss(mask_ratio), autocast, scaler, accum_iter)
