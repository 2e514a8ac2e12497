"""Lesson 09: planning a full-scale run: the batch arithmetic of the recipe, each process's share of
the data, and how long it will take.

The paper pretrains with an effective batch of 4096 images per optimizer step (appendix A.1),
whatever the hardware: 8 GPUs of 64 images with 8 accumulation steps and 64 GPUs of 64 images
make the same run. The learning rate follows the effective batch (lr = blr x batch / 256), so
a plan fixes the accumulation and the lr together.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..train.recipe import scaled_lr

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1K's training set
PAPER_BATCH = 4096
PAPER_BLR = 1.5e-4


class BatchPlan(NamedTuple):
    accum_iter: int  # micro-batches per optimizer step
    lr: float  # the absolute peak learning rate


def batch_plan(target_batch: int, per_gpu_batch: int, gpus: int, blr: float = PAPER_BLR) -> BatchPlan:
    """The accumulation that makes ``per_gpu_batch x gpus x accum_iter == target_batch``, and the lr.

    Raises ValueError when no whole number of accumulation steps reaches the target exactly (a
    different effective batch would silently change the recipe).
    """
    per_step = per_gpu_batch * gpus
    if target_batch % per_step:
        below, above = target_batch // per_step * per_step, -(-target_batch // per_step) * per_step
        raise ValueError(
            f"{gpus} GPUs x {per_gpu_batch} images cannot make a batch of exactly {target_batch}: "
            f"accumulation gives multiples of {per_step} ({below or per_step} or {above}); "
            "choose a per-GPU batch that divides it"
        )
    return BatchPlan(target_batch // per_step, scaled_lr(blr, target_batch))


def rank_indices(size: int, rank: int, world_size: int, epoch: int, seed: int = 0) -> list[int]:
    """The dataset indices process ``rank`` of ``world_size`` trains on in ``epoch``, in order.

    As torch's ``DistributedSampler`` (shuffle=True, drop_last=False) picks them, which the course's
    jobs use: every process draws the *same* permutation of ``range(size)`` from a generator seeded
    with ``seed + epoch`` (the rank plays no part; ``sampler.set_epoch`` changes it every epoch),
    pads it by repeating its first indices up to a multiple of ``world_size``, and keeps every
    ``world_size``-th index from position ``rank``. So the shares cover every image, overlap only in
    the padding, and have equal lengths: DDP all-reduces the gradients once per step on every
    process, and a process with one batch more would wait for the others forever.
    """
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return padded(order, world_size)[rank::world_size]


def padded(order: list[int], world_size: int) -> list[int]:
    """``order`` followed by its first indices again, up to a multiple of ``world_size``."""
    total = math.ceil(len(order) / world_size) * world_size
    return (order * math.ceil(total / len(order)))[:total]


def pretraining_hours(
    images_per_s_per_gpu: float, gpus: int, epochs: int, images: int = IMAGENET_TRAIN_IMAGES, scaling: float = 1.0
) -> float:
    """Wall-clock hours of ``epochs`` passes over ``images`` at a measured per-GPU throughput.

    ``scaling`` is the multi-GPU efficiency: 1.0 if ``gpus`` GPUs go ``gpus`` times as fast as one
    (data-parallel MAE comes close on one node; across nodes the network costs a few percent).
    """
    return epochs * images / (images_per_s_per_gpu * gpus * scaling) / 3600
