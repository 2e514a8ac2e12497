"""Fixed 2D sine-cosine positional embeddings, and resizing them to another grid.

A token at grid row r and column c gets a D-dimensional code: the first D/2 numbers encode
the column c, the last D/2 the row r (the layout of the official MAE code). Each half is
``[sin(pos * w_k) | cos(pos * w_k)]`` over frequencies ``w_k = 1 / 10000**(k / (D/4))`` for
k = 0 .. D/4 - 1. Row 0 of the table belongs to the cls token and is all zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .patches import grid_shape


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) codes laid out as [sin | cos] over dim/2 frequencies."""
    if dim % 2:
        raise ValueError(f"a 1D sine-cosine code needs an even dimension, got {dim}")
    k = torch.arange(dim // 2, dtype=torch.float64)
    omega = 1.0 / 10000 ** (k / (dim / 2))
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)  # (M, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed(embed_dim: int, grid_size: int | tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """The fixed 2D sine-cosine table.

    Args:
        embed_dim: D, a multiple of 4.
        grid_size: patch grid side, or (rows, columns).
        cls_token: prepend a zero row for the cls token.

    Returns:
        (1, L + 1, D) float32 table (or (1, L, D) without the cls row), tokens row-major.
    """
    if embed_dim % 4:
        raise ValueError(f"a 2D sine-cosine embedding needs embed_dim divisible by 4, got {embed_dim}")
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    row_idx, col_idx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb = torch.cat(
        [sincos_1d(embed_dim // 2, col_idx.flatten()), sincos_1d(embed_dim // 2, row_idx.flatten())],
        dim=1,
    )  # (L, D): column code first, then row code
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: int | tuple[int, int],
    num_extra_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resize a (learned or fixed) positional table to another patch grid, bicubically.

    Used to load a checkpoint trained at one resolution into a model at another.

    Args:
        pos_embed: (1, E + L, D) table with E extra (cls) rows first.
        new_grid: the target grid side, or (rows, columns).
        num_extra_tokens: E, the rows that are copied unchanged.
        old_grid: the source grid; a square grid is assumed when omitted.

    Returns:
        (1, E + L', D) table for the new grid.
    """
    new_rows, new_cols = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    extra, grid_tokens = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    rows, cols = grid_shape(grid_tokens.shape[1], old_grid)
    if (rows, cols) == (new_rows, new_cols):
        return pos_embed
    image = rearrange(grid_tokens, "b (h w) d -> b d h w", h=rows, w=cols)
    image = F.interpolate(image.float(), size=(new_rows, new_cols), mode="bicubic", align_corners=False).to(
        pos_embed.dtype
    )
    return torch.cat([extra, rearrange(image, "b d h w -> b (h w) d")], dim=1)
