"""Lesson 01: images as sequences of patches, and the patch embedding.

An image of shape (C, H, W) is cut into non-overlapping p x p patches. The patches are
read row-major over the patch grid (left to right, then top to bottom), and each patch
becomes one vector of length p*p*C ordered (pixel row, pixel column, channel). That is
the convention of the official MAE code, so predictions made by released checkpoints
unpatchify correctly with these functions.

:class:`PatchEmbed` is the model's first layer: the same linear map applied to every patch.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn


def _check_divisible(height: int, width: int, patch_size: int) -> None:
    if patch_size <= 0:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} (HxW) is not divisible by the patch size {patch_size}; "
            f"resize or crop the images to a multiple of {patch_size}"
        )


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into a sequence of flattened patches.

    Args:
        imgs: (N, C, H, W) images; H and W must be multiples of ``patch_size``.
        patch_size: side p of the square patches.

    Returns:
        (N, L, p*p*C) with L = (H/p) * (W/p). Token ``i * (W/p) + j`` is the patch in grid
        row i and column j; inside a patch the vector runs over (pixel row, pixel column,
        channel), channel fastest.
    """
    if imgs.ndim != 4:
        raise ValueError(f"patchify expects images of shape (N, C, H, W), got {tuple(imgs.shape)}")
    _check_divisible(imgs.shape[2], imgs.shape[3], patch_size)
    return rearrange(imgs, "n c (h p) (w q) -> n (h w) (p q c)", p=patch_size, q=patch_size)


def grid_shape(num_patches: int, grid_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (rows, columns) of the patch grid; a square grid unless ``grid_size`` says otherwise."""
    if grid_size is not None:
        h, w = grid_size
        if h * w != num_patches:
            raise ValueError(f"grid {h}x{w} holds {h * w} patches, but the sequence has {num_patches}")
        return h, w
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patches do not form a square grid; pass grid_size=(rows, columns)")
    return side, side


def unpatchify(x: torch.Tensor, patch_size: int, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Reassemble images from flattened patches: the exact inverse of :func:`patchify`.

    Args:
        x: (N, L, p*p*C) patch vectors in patchify order.
        patch_size: side p of the square patches.
        grid_size: (H/p, W/p); inferred as a square grid when omitted.

    Returns:
        (N, C, H, W) images.
    """
    if x.ndim != 3:
        raise ValueError(f"unpatchify expects patches of shape (N, L, p*p*C), got {tuple(x.shape)}")
    if x.shape[-1] % (patch_size * patch_size):
        raise ValueError(
            f"patch vectors have length {x.shape[-1]}, which is not a multiple of "
            f"patch_size**2 = {patch_size * patch_size}"
        )
    h, w = grid_shape(x.shape[1], grid_size)
    return rearrange(x, "n (h w) (p q c) -> n c (h p) (w q)", h=h, w=w, p=patch_size, q=patch_size)


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
