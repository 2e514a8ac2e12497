"""Lesson 09: RandomResizedCrop + flip for a whole batch of different-sized images, in a few kernels.

The CPU pipeline crops, resizes and flips one image at a time. On a GPU that is 6-8 kernel launches
per image, about 2,000 per batch of 256, all queued by the training thread. Here the whole batch
is done at once, in two steps:

1. :func:`sample_crops` draws every image's crop box and flip with one generator, all at once,
   following torchvision's ``RandomResizedCrop.get_params`` (area fraction in ``scale``, aspect
   ratio in ``ratio``, up to 10 tries, then a central crop) and ``RandomHorizontalFlip``.
2. :func:`crop_resize_flip` resamples. An antialiased resize is separable: each output row is a
   weighted sum of input rows, each output column one of input columns, so resizing the crop of
   image n is two matrix products,

       out[n, c] = Ry[n] @ image[n, c] @ Rx[n].T      Ry (N, S, H), image (N, C, H, W), Rx (N, S, W)

   where row i of ``Ry[n]`` holds the filter weights of output row i over the input rows: zero
   outside the crop box, so cropping comes free, and reversing the rows of ``Rx[n]`` flips the
   image, so flipping comes free too. The weights are torchvision's own antialiased bicubic (or
   bilinear) filter, and, like torchvision on uint8 images (the CPU pipeline), each of the two
   passes, horizontal then vertical, ends in whole grey levels in 0-255: the result is the CPU
   pipeline's to one grey level (``tests/test_gpu_data.py``).

The images of a batch have different sizes; they are padded into one (N, 3, H_max, W_max) tensor
(zeros that the weights never touch), in groups of similar size when one tensor would exceed
``max_elements``.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

MAX_ELEMENTS = 2**27  # padded float32 elements per group: 512 MB


class CropBoxes(NamedTuple):
    """The crop box and flip of each of N images, as (N,) tensors (torchvision's get_params convention)."""

    top: torch.Tensor  # int64
    left: torch.Tensor  # int64
    height: torch.Tensor  # int64
    width: torch.Tensor  # int64
    flip: torch.Tensor  # bool

    def to(self, device: torch.device | str) -> CropBoxes:
        return CropBoxes(*(t.to(device, non_blocking=True) for t in self))


def sample_crops(
    sizes: torch.Tensor,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> CropBoxes:
    """Draw the crop boxes and flips of N images of ``sizes`` (N, 2) = (height, width), all at once.

    Per image, as ``RandomResizedCrop.get_params``: ``tries`` candidate boxes of area
    ``U(scale) x H x W`` and aspect ratio (width / height) ``exp(U(log ratio))``, sides rounded to
    whole pixels; the first that fits is placed uniformly at random; if none fits, the largest
    central box whose ratio lies in ``ratio``. Then a flip with probability ``flip_p``. All the
    random numbers come from ``generator`` (the global one when None), in one draw of (N, tries, 2)
    and one of (N, 3): the same distribution as torchvision's, not its sequence of numbers.
    """
    sizes = torch.as_tensor(sizes, dtype=torch.float64).reshape(-1, 2)
    n = sizes.shape[0]
    height, width = sizes[:, 0:1], sizes[:, 1:2]
    u = torch.rand((n, tries, 2), generator=generator, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.sqrt(area * aspect).round()  # (N, tries); round half to even, as Python's round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    found = fits.any(dim=1)
    h = h.gather(1, first)[:, 0]
    w = w.gather(1, first)[:, 0]

    # No try fitted: the central crop, its aspect ratio clamped into the range.
    height, width = height[:, 0], width[:, 0]
    in_ratio = width / height
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    central_w = torch.where(wide, (height * max(ratio)).round(), width)
    central_h = torch.where(narrow, (width / min(ratio)).round(), height)
    h, w = torch.where(found, h, central_h), torch.where(found, w, central_w)

    place = torch.rand((n, 3), generator=generator, dtype=torch.float64)
    top = torch.where(found, (place[:, 0] * (height - h + 1)).floor(), ((height - h) / 2).floor())
    left = torch.where(found, (place[:, 1] * (width - w + 1)).floor(), ((width - w) / 2).floor())
    flip = place[:, 2] < flip_p
    return CropBoxes(top.long(), left.long(), h.long(), w.long(), flip)


def bicubic_filter(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (PIL's and torchvision's antialiased bicubic); support 2."""
    a, x = -0.5, x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bilinear_filter(x: torch.Tensor) -> torch.Tensor:
    """The triangle kernel; support 1."""
    return (1 - x.abs()).clamp(min=0)


FILTERS = {"bicubic": bicubic_filter, "bilinear": bilinear_filter}  # each is zero beyond its support


def resize_weights(
    start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int, interpolation: str = "bicubic"
) -> torch.Tensor:
    """(N, out_size, in_size) float32: row i of matrix n resamples input positions
    ``[start[n], start[n] + length[n])`` onto output position i of ``out_size``, antialiased.

    torchvision's antialiased resize (``_upsample_bicubic2d_aa``): output i has its centre at
    ``scale x (i + 0.5)`` in the crop, ``scale = length / out_size``; when shrinking (scale > 1)
    the filter is stretched by ``scale`` so that it averages over every input pixel it covers;
    the weights of each output sum to 1. Positions outside the crop weigh 0.
    """
    kernel = FILTERS[interpolation]
    start, length = start.to(torch.float32), length.to(torch.float32)
    scale = length / out_size  # (N,)
    stretch = scale.clamp(min=1.0)
    centre = scale[:, None] * (torch.arange(out_size, device=start.device) + 0.5)  # (N, out), crop coordinates
    j = torch.arange(in_size, device=start.device)[None, None, :] - start[:, None, None]  # (N, 1, in)
    weights = kernel((j + 0.5 - centre[:, :, None]) / stretch[:, None, None])
    weights = weights * ((j >= 0) & (j < length[:, None, None]))  # the kernel itself is zero beyond its support
    return weights / weights.sum(dim=-1, keepdim=True)


def pad_to_batch(images: list[torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N images (C, H_i, W_i) -> one (N, C, H_max, W_max) of ``dtype``, zero-padded at the bottom and right.

    Two copies for the whole batch rather than one per image: the images are concatenated into a
    nested tensor, which ``to_padded_tensor`` writes out padded. (An image that is not contiguous,
    such as the channels-last view the CPU's JPEG decoder returns, costs one more copy of its own.)
    """
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    flat = torch.cat([image.reshape(-1) for image in images]).to(dtype)  # one kernel (batched cat), one cast
    parts = flat.split([image.numel() for image in images])
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # "nested tensors are a prototype": the strided layout is enough here
        nested = torch.nested.as_nested_tensor([p.view(image.shape) for p, image in zip(parts, images, strict=True)])
    return nested.to_padded_tensor(0.0, output_size=(len(images), images[0].shape[0], height, width))


def size_groups(sizes: list[tuple[int, int]], channels: int = 3, max_elements: int = MAX_ELEMENTS) -> list[list[int]]:
    """Positions of the images grouped so that each group's padded tensor stays under ``max_elements``:
    one group for a typical batch; images sorted by orientation and area first, so that padding wastes little."""
    order = sorted(range(len(sizes)), key=lambda k: (sizes[k][0] > sizes[k][1], sizes[k][0] * sizes[k][1]))
    groups: list[list[int]] = []
    height = width = 0
    for k in order:
        h, w = max(height, sizes[k][0]), max(width, sizes[k][1])
        if groups and (len(groups[-1]) + 1) * channels * h * w > max_elements:
            groups.append([])
            h, w = sizes[k]
        elif not groups:
            groups.append([])
        groups[-1].append(k)
        height, width = h, w
    return groups


def matmul_dtype(device: torch.device) -> torch.dtype:
    """What the resampling products run in: float16 on a GPU (tensor cores; 0-255 and the integer levels
    between the passes are exact in it, the weights are kept to 11 significant bits, the sums in float32),
    float32 elsewhere (CPUs multiply float16 slowly)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def crop_resize_flip(
    images: list[torch.Tensor],
    boxes: CropBoxes,
    size: int,
    interpolation: str = "bicubic",
    max_elements: int = MAX_ELEMENTS,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Crop each image (C, H_i, W_i) to its box, resize the crop to ``size`` x ``size`` (antialiased),
    flip where asked: (N, C, size, size) float32 with values 0-255, rounded to whole grey levels and
    clipped after each pass, as torchvision's uint8 resize (the CPU pipeline) does: bicubic's negative
    lobes overshoot at hard edges, and a uint8 image cannot hold the overshoot between its passes.
    ``boxes`` may live on the CPU or on the images' device; the products run in ``dtype``
    (:func:`matmul_dtype` by default).

    The cost is in the products: about ``C x S x H x W`` multiply-adds per image (0.2 GFLOP for a
    500 x 375 photo at 224), the work of dense matrices that are mostly zero. A GPU does them for a
    batch of 256 in well under a millisecond, in a handful of kernels; a CPU's vector units resize one
    uint8 image at a time much faster (``scripts/batched_crop_speed.py``), which is why the CPU
    pipeline keeps torchvision's per-image transforms.
    """
    device = images[0].device
    dtype = dtype or matmul_dtype(device)
    boxes = boxes.to(device)
    out = torch.empty((len(images), images[0].shape[0], size, size), device=device)
    for group in size_groups([tuple(image.shape[-2:]) for image in images], images[0].shape[0], max_elements):
        canvas = pad_to_batch([images[k] for k in group], dtype)  # (G, C, H, W)
        index = torch.tensor(group, device=device)
        top, left, height, width, flip = (t[index] for t in boxes)
        rows = resize_weights(top, height, size, canvas.shape[-2], interpolation).to(dtype)  # (G, S, H)
        cols = resize_weights(left, width, size, canvas.shape[-1], interpolation).to(dtype)  # (G, S, W)
        cols = torch.where(flip[:, None, None], cols.flip(1), cols)  # a flip reverses the output columns
        across = (canvas @ cols.transpose(1, 2).unsqueeze(1)).round_().clamp_(0, 255)  # (G, C, H, S)
        out[index] = (rows.unsqueeze(1) @ across).float().round_().clamp_(0, 255)  # (G, C, S, S)
    return out
