"""Lesson 09: a generated ImageNet-format folder of JPEGs with realistic sizes, for data-pipeline benchmarks.

    make_jpeg_folder("/tmp/fake_imagenet", images=20_000)

writes ``train/<class>/<class>_<n>.JPEG`` (ImageNet's layout and extension): the built-in shapes,
rendered small, enlarged to a size drawn around 500x375 (landscape or portrait, as ImageNet photos
mostly are), with per-pixel grain so that the JPEGs carry photo-like detail (about 60 KB each at
quality 90; ImageNet's average is about 110 KB). Decoding cost depends on the pixel count and the
compressed size, which is what a loader benchmark needs; the content does not matter.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import encode_jpeg, write_file
from tqdm.auto import tqdm

from .builtin import CLASSES, render_shapes
from .image_files import quiet_torchvision_io

_CHUNK = 64  # images per work item; each chunk has its own seed, so the result does not depend on workers


def _size(long_side: int, landscape: bool) -> tuple[int, int]:
    """(height, width) of a 4:3 (landscape) or 3:4 (portrait) image with the given long side."""
    short = round(long_side * 3 / 4)
    return (short, long_side) if landscape else (long_side, short)


def _write_chunk(args: tuple[Path, int, int, int, int, int, float]) -> int:
    """Render and write images [start, stop) of the folder; returns how many files it wrote."""
    root, start, stop, classes, quality, seed, grain = args
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
    labels = torch.arange(start, stop) % classes
    small = render_shapes(labels, 128, generator).float() / 255
    long_sides = (500 * (0.85 + 0.3 * torch.rand(len(labels), generator=generator))).round().int().tolist()
    landscape = (torch.rand(len(labels), generator=generator) < 0.75).tolist()  # ImageNet: mostly landscape
    written = 0
    for k, i in enumerate(range(start, stop)):
        size = _size(long_sides[k], landscape[k])
        big = F.interpolate(small[k][None], size=size, mode="bicubic", align_corners=False)[0]
        big = big + grain * torch.randn(big.shape, generator=generator)  # drawn even when kept: same stream
        name = CLASSES[labels[k]]
        path = root / "train" / name / f"{name}_{i:06d}.JPEG"
        if path.exists():
            continue
        partial = path.with_suffix(".partial")
        with quiet_torchvision_io():
            write_file(str(partial), encode_jpeg((big.clamp(0, 1) * 255).round().to(torch.uint8), quality=quality))
        partial.replace(path)
        written += 1
    return written


def make_jpeg_folder(
    root: str | Path,
    images: int = 20_000,
    classes: int = 10,
    quality: int = 90,
    seed: int = 0,
    grain: float = 0.04,
    workers: int | None = None,
) -> Path:
    """Write ``images`` JPEGs in ``root/train/<class>/``, balanced over ``classes`` classes; returns root.

    ``workers`` processes share the work (default: one per core; 0 or 1: this process). Files that
    already exist are kept, so an interrupted generation continues; the same arguments always give
    the same files.
    """
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in [1, {len(CLASSES)}], got {classes}")
    root = Path(root).expanduser()
    for name in CLASSES[:classes]:
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
    jobs = [(root, s, min(s + _CHUNK, images), classes, quality, seed, grain) for s in range(0, images, _CHUNK)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=images, desc="writing JPEGs", unit="img")
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            _write_chunk(job)
            bar.update(job[2] - job[1])
    else:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for job, _ in zip(jobs, pool.imap(_write_chunk, jobs), strict=True):
                bar.update(job[2] - job[1])
    bar.close()
    return root
