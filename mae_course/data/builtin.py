"""The built-in shapes dataset as a torch ``Dataset``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from .shapes import CLASSES, load_split


class BuiltinShapes(Dataset):
    """Ten classes of shapes on cluttered backgrounds, generated and cached on first use.

    Args:
        split: "train" (10,000 images) or "test" (2,000 images); both balanced.
        image_size: 32 or 64.
        transform: applied to each (3, S, S) uint8 image; without one, images come back
            as float32 in [0, 1].

    Items are ``(image, label)``. ``images`` and ``labels`` hold the whole split as
    (N, 3, S, S) uint8 and (N,) int64 tensors.
    """

    classes = CLASSES

    def __init__(self, split: str = "train", image_size: int = 32, transform: Callable | None = None):
        self.split = split
        self.image_size = image_size
        self.images, self.labels = load_split(split, image_size)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        image = self.transform(image) if self.transform is not None else image.float() / 255
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return f"BuiltinShapes(split={self.split!r}, image_size={self.image_size}, n={len(self)})"
