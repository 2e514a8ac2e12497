"""Lesson 04: the light decoder's input and the loss it is trained with.

The decoder sees every position of the grid: the encoded visible tokens, put back in place,
and one shared, learned mask token wherever a patch was removed
(:func:`unshuffle_with_mask_tokens`). It predicts the pixels of every patch; the loss is the
mean squared error on the removed patches only (:func:`masked_mse_loss`), optionally against
each patch's normalized pixels (:func:`norm_pix_target`).
"""

from __future__ import annotations

import torch
from einops import repeat


def unshuffle_with_mask_tokens(
    x_visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor
) -> torch.Tensor:
    """Build the decoder's input sequence: visible tokens plus mask tokens, in grid order.

    Args:
        x_visible: (N, K, D) the visible tokens, in the shuffled order masking left them in.
        mask_token: (1, 1, D) the one shared, learned mask token.
        ids_restore: (N, L) the permutation returned by masking.

    Returns:
        (N, L, D): position i holds the visible token of patch i, or the mask token if
        patch i was removed. Its dtype is the wider of the two inputs' (``torch.cat`` promotes,
        as in the official code): under autocast, 16-bit tokens and the float32 mask token
        give float32.
    """
    n, kept, dim = x_visible.shape
    length = ids_restore.shape[1]
    mask_tokens = mask_token.expand(n, length - kept, dim)
    shuffled = torch.cat([x_visible, mask_tokens], dim=1)  # (N, L, D), shuffled order
    return torch.gather(shuffled, 1, repeat(ids_restore, "n l -> n l d", d=dim))


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
