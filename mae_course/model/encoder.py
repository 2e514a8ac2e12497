"""Lesson 03: the encoder's building blocks.

**Where a patch is.** Attention ignores order, so every token gets a positional code added.
MAE uses a fixed 2D sine-cosine table: a token at grid row r and column c gets a D-dimensional
code whose first D/2 numbers encode the column c and last D/2 the row r (the layout of the
official MAE code). Each half is ``[sin(pos * w_k) | cos(pos * w_k)]`` over frequencies
``w_k = 1 / 10000**(k / (D/4))`` for k = 0 .. D/4 - 1. Row 0 of the table belongs to the cls
token and is all zeros.

**What a token looks at.** Multi-head self-attention, written out in :func:`attention` and
computed by ``scaled_dot_product_attention`` in :class:`Attention`; the pre-norm Transformer
:class:`Block` (timm's layout) is shared by the MAE encoder, its decoder and the ViT classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.ops import StochasticDepth

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


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, written out: ``softmax(q k^T / sqrt(d)) v``.

    Args:
        q, k, v: (N, heads, T, d) queries, keys and values.

    Returns:
        (N, heads, T, d): for each query, the average of the values weighted by how well
        its key matches, the weights normalized over the keys (the last axis).

    ``torch.nn.functional.scaled_dot_product_attention`` computes the same thing with
    fused kernels; :class:`Attention` uses that.
    """
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (N, heads, T, T)
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (with bias).

    (N, T, D) -> (N, T, D). The heads are computed by
    ``torch.nn.functional.scaled_dot_product_attention``, which picks a flash or
    memory-efficient kernel where one is available.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.num_heads)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, per head
        return self.proj(rearrange(x, "n h t d -> n t (h d)"))


class Mlp(nn.Module):
    """Two linear layers with an exact GELU between them: (N, T, D) -> (N, T, D)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x)). LayerNorm eps 1e-6, MLP ratio 4 by default.

    ``drop_path`` (stochastic depth) drops each residual branch per sample with that
    probability during training; it is used for fine-tuning, never for MAE pretraining.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
