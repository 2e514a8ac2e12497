"""Data the course ships or generates: the built-in shapes dataset and a few real photos."""

from .builtin import BuiltinShapes
from .photos import list_photos, load_image, load_photo, photo_dir
from .shapes import CLASSES, load_split, make_split, render_shapes
from .shipped import shipped_checkpoint, shipped_dir, shipped_results

__all__ = [
    "CLASSES",
    "BuiltinShapes",
    "list_photos",
    "load_image",
    "load_photo",
    "load_split",
    "make_split",
    "photo_dir",
    "render_shapes",
    "shipped_checkpoint",
    "shipped_dir",
    "shipped_results",
]
