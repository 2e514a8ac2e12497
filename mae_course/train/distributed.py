"""Lesson 09: one process or many, the torch.distributed set-up every command shares.

Launched plainly, a command runs as a single process. Launched by ``torchrun`` (which sets
RANK, WORLD_SIZE and LOCAL_RANK), it joins the process group: NCCL on GPUs, gloo on CPUs.
:func:`wrap_ddp` then makes every process apply the same update: DistributedDataParallel
averages the gradients across processes during the backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs and which part of the work is its own."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes logs, checkpoints and figures."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" -> the GPU if there is one, else the CPU; otherwise the named device, checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but PyTorch sees no CUDA GPU here")
    return resolved


def init_runtime(device: str = "auto") -> Runtime:
    """Join the process group if launched by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world_size == 1:
        return Runtime(device=resolved)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return Runtime(device=resolved, rank=rank, world_size=world_size, local_rank=local_rank)


DEFAULT_BUCKET_CAP_MB = 25.0  # torch's own default


def wrap_ddp(module: nn.Module, bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB) -> DistributedDataParallel:
    """Wrap ``module`` (on this process's device) for data-parallel training.

    DDP all-reduces the gradients in buckets of about ``bucket_cap_mb`` megabytes, filled in
    the order the backward pass produces them; each bucket is sent as soon as it is full, so
    the communication overlaps the rest of the backward pass. Bigger buckets mean fewer, larger
    messages (less overhead per call) but a later start and less overlap; 25 MB is torch's
    default and a good start: time a few values before changing it. Every parameter of the MAE
    gets a gradient every step, so ``find_unused_parameters=False`` spares DDP a search of the
    autograd graph each step, and ``gradient_as_bucket_view=True`` makes each ``param.grad`` a
    view into its bucket, which saves one copy of the gradients in memory.
    """
    device = next(module.parameters()).device
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=bucket_cap_mb,
        find_unused_parameters=False,
        gradient_as_bucket_view=True,
    )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The average of a tensor over all processes (itself when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.AVG if value.is_cuda else dist.ReduceOp.SUM)
        if not value.is_cuda:  # gloo has no AVG
            value /= dist.get_world_size()
    return value


def sum_across_ranks(value: float, device: torch.device) -> float:
    """The sum of a number over all processes (itself when not distributed)."""
    return mean_across_ranks(torch.tensor(float(value), device=device)).item() * (
        dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    )


def everyone(ok: bool) -> bool:
    """True when ``ok`` is true in every process (an all-reduce; ``ok`` itself in one process).

    A decision that one process makes (rank 0 takes the output folder's lock, say) must be
    shared, or the others would wait forever for a process that has stopped.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor(1 if ok else 0, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def grad_disagreement(model: torch.nn.Module) -> float:
    """The largest difference, over every gradient entry, between a process's gradients and rank 0's.
    After DDP's all-reduce it must be 0: every process applies the same update.

    Each gradient is broadcast from rank 0 in turn (one parameter's worth of extra memory): slow,
    for debugging only.
    """
    largest = torch.zeros((), device=next(model.parameters()).device)
    for p in model.parameters():
        if p.grad is None:
            continue
        first = p.grad.detach().float().clone()
        dist.broadcast(first, src=0)
        largest = torch.maximum(largest, (p.grad.float() - first).abs().max())
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return largest.item()
