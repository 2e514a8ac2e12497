"""Lesson 07: how well a classifier does: top-1 and top-5 accuracy, over one process or many."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset


def accuracy_counts(logits: torch.Tensor, targets: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """How many samples have their true class among the k highest logits, for each k.

    Args:
        logits: (N, classes); targets: (N,) class indices.
    """
    k_max = min(max(topk), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices  # (N, k)
    hit = top == targets[:, None]
    return [hit[:, : min(k, k_max)].any(dim=1).sum() for k in topk]


@torch.no_grad()
def measure_accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``predict`` over ``batches`` of
    (inputs, targets), summed over all processes (each must see its own share of the data)."""
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # correct@1, correct@5, loss sum, count
    for inputs, targets in batches:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast():
            logits = predict(inputs)
        top1, top5 = accuracy_counts(logits.float(), targets)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        count = torch.tensor(len(targets), device=device, dtype=torch.float64)
        totals += torch.stack([top1.double(), top5.double(), loss.double(), count])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    count = max(totals[3].item(), 1.0)
    return {
        "top1": 100 * totals[0].item() / count,
        "top5": 100 * totals[1].item() / count,
        "loss": totals[2].item() / count,
    }


def shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """This process's disjoint share of an evaluation set (no padding, so every image counts once)."""
    return dataset if world_size == 1 else Subset(dataset, range(rank, len(dataset), world_size))
