"""A generated ImageNet-format folder of JPEGs with realistic sizes, for data-pipeline benchmarks.

    make_jpeg_folder("/tmp/fake_imagenet", images=20_000)

writes ``train/<class>/<class>_<n>.JPEG`` (ImageNet's layout and extension): the built-in shapes,
rendered small, enlarged to a size drawn around 500x375 (landscape or portrait, as ImageNet photos
mostly are), with per-pixel grain so that the JPEGs carry photo-like detail (tens of KB each at
quality 90, near ImageNet's average of about 110 KB for 500x375). Decoding cost depends on the pixel
count and the compressed size, which is what a loader benchmark needs; the content does not matter.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import encode_jpeg, write_file
from tqdm.auto import tqdm

from ..gpu_data import quiet_torchvision_io
from .shapes import CLASSES, render_shapes

_CHUNK = 64


def _sizes(n: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """(height, width) per image: the long side about 500 (+-15%), 4:3 or 3:4, three in four landscape."""
    long = (500 * (0.85 + 0.3 * torch.rand(n, generator=generator))).round().int().tolist()
    landscape = (torch.rand(n, generator=generator) < 0.75).tolist()
    return [(round(s * 3 / 4), s) if wide else (s, round(s * 3 / 4)) for s, wide in zip(long, landscape, strict=True)]


def make_jpeg_folder(
    root: str | Path, images: int = 20_000, classes: int = 10, quality: int = 90, seed: int = 0, grain: float = 0.04
) -> Path:
    """Write ``images`` JPEGs in ``root/train/<class>/``, balanced over ``classes`` classes; returns root.

    Files that already exist are kept, so an interrupted generation continues.
    """
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in [1, {len(CLASSES)}], got {classes}")
    root = Path(root).expanduser()
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(images) % classes
    sizes = _sizes(images, generator)
    for name in CLASSES[:classes]:
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, images, _CHUNK), desc="writing JPEGs", unit_scale=_CHUNK):
        chunk = range(start, min(start + _CHUNK, images))
        small = render_shapes(labels[chunk.start : chunk.stop], 128, generator).float() / 255
        for i, img in zip(chunk, small, strict=True):
            big = F.interpolate(img[None], size=sizes[i], mode="bicubic", align_corners=False)[0]
            big = big + grain * torch.randn(big.shape, generator=generator)  # drawn even when kept: same stream
            path = root / "train" / CLASSES[labels[i]] / f"{CLASSES[labels[i]]}_{i:06d}.JPEG"
            if path.exists():
                continue
            pixels = (big.clamp(0, 1) * 255).round().to(torch.uint8)
            partial = path.with_suffix(".partial")
            with quiet_torchvision_io():
                write_file(str(partial), encode_jpeg(pixels, quality=quality))
            partial.replace(path)
    return root
