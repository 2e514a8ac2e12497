"""Lesson 02: what no learning can do: filling removed patches from the visible pixels around them.

Images are spatially redundant: a missing patch surrounded by visible ones can be filled
in quite well by smearing its neighbours inward, with no understanding at all. The paper
argues that this is why MAE needs a far higher masking ratio than BERT's 15%: only when
most of the image is gone does filling it in require knowing what the image shows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import repeat

from ..model.patches import grid_shape, unpatchify


def diffuse_inpaint(imgs: torch.Tensor, mask: torch.Tensor, patch_size: int, max_steps: int = 1000) -> torch.Tensor:
    """Fill removed patches by repeatedly averaging the known pixels around them.

    Args:
        imgs: (N, C, H, W) images.
        mask: (N, L) 1 for removed patches, as from :func:`mae_course.random_masking`.
        patch_size: p, with L = (H/p) * (W/p).

    Returns:
        (N, C, H, W): visible pixels unchanged, removed ones filled from their surroundings.
    """
    n, c, h, w = imgs.shape
    grid = grid_shape(mask.shape[1], (h // patch_size, w // patch_size))
    per_pixel = repeat(mask.float(), "n l -> n l d", d=patch_size * patch_size)
    known = 1 - unpatchify(per_pixel, patch_size, grid)  # (N, 1, H, W): 1 where visible
    values = imgs * known
    kernel = torch.ones(1, 1, 3, 3, dtype=imgs.dtype, device=imgs.device)
    filled = imgs * known
    for _ in range(max_steps):
        if bool(known.min() > 0):
            break
        weight = F.conv2d(known, kernel, padding=1)  # how many known neighbours
        total = F.conv2d(values.reshape(n * c, 1, h, w), kernel, padding=1).reshape(n, c, h, w)
        newly = (known == 0) & (weight > 0)
        estimate = total / weight.clamp(min=1)
        filled = torch.where(newly, estimate, filled)
        values = torch.where(newly, estimate, values)
        known = torch.where(newly, torch.ones_like(known), known)
    # smooth the filled region a little so it does not show the order of filling
    for _ in range(4):
        blurred = F.avg_pool2d(F.pad(filled, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        filled = torch.where(1 - unpatchify(per_pixel, patch_size, grid) > 0, imgs, blurred)
    return filled
