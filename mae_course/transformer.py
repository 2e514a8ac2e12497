"""The pre-norm Transformer block shared by the MAE encoder and decoder (timm's layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.ops import StochasticDepth


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
