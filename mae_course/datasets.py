"""Choosing a dataset by name or path: the built-in shapes, or any ImageFolder tree."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from .data.builtin import BuiltinShapes
from .errors import DataError

BUILTIN = "builtin"


def builtin_source_size(image_size: int) -> int:
    """The built-in data is rendered at 32 or 64 px; use the smallest that covers ``image_size``."""
    return 32 if image_size <= 32 else 64


def default_workers(data: str) -> int:
    """DataLoader workers: none for the in-memory built-in data, else one per spare CPU core, at most 8."""
    if data == BUILTIN:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


def make_dataset(data: str, split: str, transform: Callable | None, image_size: int = 32) -> Dataset:
    """``data`` is "builtin" or a folder of class sub-folders of images.

    A folder with ``train/`` and ``val/`` (or ``test/``) inside (ImageNet's layout) gives
    those splits; a folder of class folders is used as it is for every split.
    """
    if data == BUILTIN:
        return BuiltinShapes("train" if split == "train" else "test", builtin_source_size(image_size), transform)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset not found: {data!r} is neither 'builtin' nor an existing folder")
    names = ("train",) if split == "train" else ("val", "test")
    folder = next((root / n for n in names if (root / n).is_dir()), root)
    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{folder} is not an image folder: {e}") from None
