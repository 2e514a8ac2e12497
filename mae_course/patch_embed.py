"""Patch embedding: one linear map per patch, written as a strided convolution."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Embed every p x p patch of an image with the same linear map.

    A convolution with kernel = stride = p is exactly a Linear layer applied to each
    flattened patch; ``proj`` keeps the official parameter name (``patch_embed.proj``).

    Input (N, C, H, W) -> output (N, L, D), tokens row-major over the patch grid.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(
                f"image size {img_size} is not divisible by the patch size {patch_size}; "
                f"choose an image size that is a multiple of {patch_size}"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if imgs.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"the model expects {self.img_size}x{self.img_size} images, got {imgs.shape[-2]}x{imgs.shape[-1]}"
            )
        return rearrange(self.proj(imgs), "n d h w -> n (h w) d")
