"""Lessons 00-06: the real photographs shipped with the course (free licences; see CREDITS.md beside them)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError
from .image_files import open_rgb
from .shipped import shipped_dir


def photo_dir() -> Path:
    """The folder of the shipped photos (``data/photos`` in the repository)."""
    return shipped_dir() / "photos"


def list_photos() -> list[str]:
    """Names of the shipped photos, e.g. ['astronaut', 'chelsea', 'coffee', 'rocket']."""
    return sorted(p.stem for p in photo_dir().glob("*.jpg"))


def load_image(path: str | Path, size: int | None = 224) -> torch.Tensor:
    """Read an image file as a (3, H, W) float tensor in [0, 1].

    With ``size``, the shorter side is resized to ``size`` and the center square cropped,
    so any photo fits a model's input.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path} (looked at {path.absolute()})")
    img = TF.pil_to_tensor(open_rgb(str(path)))
    if size is not None:
        img = TF.center_crop(TF.resize(img, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True), size)
    return img.float().div(255).clamp(0, 1)


def load_photo(name: str, size: int | None = 224) -> torch.Tensor:
    """A shipped photo by name, as a (3, size, size) float tensor in [0, 1]."""
    names = list_photos()
    if name not in names:
        raise DataError(f"no shipped photo {name!r}; choose one of {', '.join(names)}")
    return load_image(photo_dir() / f"{name}.jpg", size)
