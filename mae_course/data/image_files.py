"""Lessons 05-09: reading image files safely; every decoder of the course goes through here.

Image files from the wild are not always what their names say. Four cases would otherwise
give a traceback or, worse, silently wrong pixels:

* a file that is not an image, or a truncated one: a :class:`DataError` that names it;
* a *decompression bomb*, a small file whose header announces an enormous image (e.g. a
  20000 x 20000 PNG): refused before it is decoded, like any unreadable file;
* 16-bit images (a 16-bit grayscale PNG opens in PIL as mode ``I;16``): ``convert("RGB")``
  would clip every value above 255 to white; they are scaled to 8 bits instead;
* float images (a 32-bit float TIFF opens as mode ``F``), whose values are mostly in [0, 1]:
  ``convert("RGB")`` would make them black; they are scaled to [0, 255] (values outside [0, 255],
  or not finite, make the file unreadable).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

# PIL refuses images over twice this many pixels (DecompressionBombError) and warns above it;
# the course refuses both, as unreadable files: no real photo is that large.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

# What PIL raises for files it cannot decode: many types, depending on the format and the damage.
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@contextlib.contextmanager
def quiet_torchvision_io() -> Iterator[None]:
    """Silence torchvision 0.29's deprecation warning of its image decoders (one per call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=re.escape("The image decoding and encoding"), category=DeprecationWarning
        )
        yield


def check_size(width: int, height: int, name: str) -> None:
    """Refuse an image whose header announces more than :data:`MAX_PIXELS` pixels."""
    if width * height > MAX_PIXELS:
        raise DataError(
            f"cannot read image {name}: its header announces {width} x {height} pixels, more than "
            f"{MAX_PIXELS:,} (a decompression bomb, or a mislabelled file)"
        )


def to_rgb(img: Image.Image, name: str = "the file") -> Image.Image:
    """An RGB copy of an opened image; 16-bit images are scaled to 8 bits rather than clipped, and
    float images (mode F) of values in [0, 1] scaled to [0, 255] (values up to 255 are taken as they are)."""
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img, dtype=np.int64).clip(0, 65535)
        img = Image.fromarray((values >> 8).astype(np.uint8), mode="L")
    elif img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
        if not (np.isfinite(values).all() and 0 <= low and high <= 255):
            raise DataError(
                f"cannot read image {name}: float pixel values from {low:g} to {high:g}; expected 0 to 1 (or 0 to 255)"
            )
        scale = 255 if high <= 1 else 1
        img = Image.fromarray(np.round(values * scale).astype(np.uint8), mode="L")
    return img.convert("RGB")  # convert() forces the whole file to be decoded


def open_rgb(path: str) -> Image.Image:
    """Read an image file fully, as RGB; an unreadable file is a DataError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error, not a warning
            with Image.open(path) as img:
                check_size(*img.size, path)
                return to_rgb(img, path)
    except DataError:
        raise
    except (*UNREADABLE, Image.DecompressionBombWarning) as e:
        raise DataError(f"cannot read image {path}: {str(e) or type(e).__name__}") from None
