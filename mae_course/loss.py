"""The MAE reconstruction loss: mean squared error on the removed patches only."""

from __future__ import annotations

import torch


def norm_pix_target(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalize every patch by its own mean and standard deviation.

    ``(t - mean) / sqrt(var + eps)`` over the p*p*C values of each patch, with the
    *unbiased* variance and eps = 1e-6, exactly as the official code does.

    Args:
        target: (N, L, p*p*C) patchified pixels.

    Returns:
        (N, L, p*p*C) normalized patches.
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)  # unbiased (divides by p*p*C - 1)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch, averaged over the removed patches only.

    Args:
        pred: (N, L, p*p*C) predictions for every patch, in patchify order.
        target: (N, L, p*p*C) the pixels (or normalized pixels) to predict.
        mask: (N, L) 1 for removed patches, 0 for visible ones.

    Returns:
        a scalar: sum over removed patches of their mean squared error / number removed.
        Predictions of visible patches do not affect it.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}")
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # (N, L)
    return (per_patch * mask).sum() / mask.sum()


def denormalize_patches(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Undo :func:`norm_pix_target` for predictions, using each *target* patch's statistics.

    A model trained on normalized pixels predicts every patch without its mean and scale. To
    draw the prediction, give it back the mean and ``sqrt(var + eps)`` (unbiased variance) of
    the true patch at the same place: ``pred * sqrt(var + eps) + mean``.

    Args:
        pred: (N, L, p*p*C) predictions in normalized-pixel space.
        target: (N, L, p*p*C) the true patches, in pixel space.
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return pred * (var + eps) ** 0.5 + mean
