"""Lessons 01-05: the built-in dataset, ten families of shapes over cluttered backgrounds.

Every image holds one shape. Its class is its *form* (a ring, a star, three dots, ...),
while everything a single patch could give away is random: fill colour, background
colour, scale, position and rotation, with smooth colour noise and random strokes
behind it. So a classifier has to see the global structure, and a masked autoencoder
has something real to reason about.

The images are rendered with anti-aliased signed distance functions, vectorised over the
whole batch, and are fully determined by the split's seed. A split takes a few seconds
to make and is cached as uint8 tensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..checkpoint import atomic_save

CLASSES = ("disk", "ring", "triangle", "square", "plus", "star", "crescent", "arrow", "ell", "triad")
SPLITS = {"train": (10_000, 0), "test": (2_000, 1)}  # split -> (size, seed)
SIZES = (32, 64)
VERSION = 1  # bump when the rendering changes, so stale caches are not reused
_CHUNK = 250  # images rendered at once: small enough to stay in cache


def cache_dir() -> Path:
    """Where generated splits are cached: ``$MAE_COURSE_CACHE`` or ``~/.cache/mae_course``."""
    return Path(os.environ.get("MAE_COURSE_CACHE", Path.home() / ".cache" / "mae_course"))


# ----------------------------------------------------------------------------- geometry
# Signed distances in the shape's own frame (radius about 1): negative inside.


def _box(p: torch.Tensor, half: tuple[float, float], center: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    q = (p - p.new_tensor(center)).abs() - p.new_tensor(half)
    outside = q.clamp(min=0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0)
    return outside + inside


def _convex_polygon(p: torch.Tensor, vertices: list[tuple[float, float]]) -> torch.Tensor:
    """Max over edges of the signed distance to the edge's line (vertices counter-clockwise)."""
    v = p.new_tensor(vertices)
    edges = torch.roll(v, -1, dims=0) - v
    normals = torch.stack([edges[:, 1], -edges[:, 0]], dim=1)
    normals = normals / normals.norm(dim=1, keepdim=True)
    return ((p.unsqueeze(-2) - v) * normals).sum(-1).max(dim=-1).values


def _regular_polygon(p: torch.Tensor, sides: int, radius: float) -> torch.Tensor:
    angles = [math.pi / 2 + 2 * math.pi * k / sides for k in range(sides)]
    return _convex_polygon(p, [(radius * math.cos(a), radius * math.sin(a)) for a in angles])


def _circle(p: torch.Tensor, radius: float, center: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    return (p - p.new_tensor(center)).norm(dim=-1) - radius


def _star(p: torch.Tensor, points: int = 5, outer: float = 1.15, inner: float = 0.48) -> torch.Tensor:
    r = p.norm(dim=-1)
    phi = torch.atan2(p[..., 1], p[..., 0]) - math.pi / 2
    sector = 2 * math.pi / points
    t = ((phi % sector) / sector - 0.5).abs() * 2  # 1 at a tip, 0 between tips
    return (r - (inner + (outer - inner) * t)) * 0.8


def _sdf(name: str, p: torch.Tensor) -> torch.Tensor:
    if name == "disk":
        return _circle(p, 0.95)
    if name == "ring":
        return (p.norm(dim=-1) - 0.75).abs() - 0.27
    if name == "triangle":
        return _regular_polygon(p, 3, 1.2)
    if name == "square":
        return _regular_polygon(p, 4, 1.05)
    if name == "plus":
        return torch.minimum(_box(p, (1.0, 0.3)), _box(p, (0.3, 1.0)))
    if name == "star":
        return _star(p)
    if name == "crescent":
        return torch.maximum(_circle(p, 1.0), -_circle(p, 0.8, (0.5, 0.15)))
    if name == "arrow":
        head = _convex_polygon(p, [(1.05, 0.0), (0.2, 0.65), (0.2, -0.65)])
        return torch.minimum(head, _box(p, (0.6, 0.2), (-0.35, 0.0)))
    if name == "ell":
        return torch.minimum(_box(p, (0.25, 1.0), (-0.5, 0.0)), _box(p, (0.75, 0.25), (0.0, -0.75)))
    if name == "triad":
        centers = [(0.7 * math.cos(a), 0.7 * math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
        return torch.stack([_circle(p, 0.33, c) for c in centers]).min(dim=0).values
    raise KeyError(name)


def _segment(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from points (N, H, W, 2) to segments a-b, each (N, 2)."""
    a, b = a[:, None, None], b[:, None, None]
    ab = b - a
    t = (((p - a) * ab).sum(-1, keepdim=True) / (ab * ab).sum(-1, keepdim=True).clamp(min=1e-8)).clamp(0, 1)
    return (p - a - t * ab).norm(dim=-1)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N,) each in [0, 1] -> (N, 3)."""
    k = (torch.stack([h * 6 + 5, h * 6 + 3, h * 6 + 1], dim=-1)) % 6
    f = (torch.minimum(k, 4 - k)).clamp(0, 1)
    return v[:, None] - v[:, None] * s[:, None] * f


# ----------------------------------------------------------------------------- rendering


def _upsample(noise: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)


def render_shapes(
    labels: torch.Tensor, size: int, generator: torch.Generator, with_masks: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Render one image per label.

    Args:
        labels: (N,) class indices into :data:`CLASSES`.
        size: image side S in pixels.
        generator: the source of every random choice, so the result is reproducible.
        with_masks: also return each image's per-pixel labels (the images are the same either way).

    Returns:
        (N, 3, S, S) uint8 images; with ``with_masks``, also (N, S, S) uint8 label maps: 0 for the
        background, ``label + 1`` where the shape covers at least half of the pixel.
    """
    n = len(labels)

    def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    # Pose of the shape: scale (radius as a fraction of the half-image), rotation, centre.
    scale = u(n, lo=0.42, hi=0.78)
    angle = u(n, hi=2 * math.pi)
    reach = (0.95 - 1.1 * scale).clamp(min=0.0)
    center = (u(n, 2, lo=-1, hi=1)) * reach[:, None]

    # Colours: background and shape differ in brightness by at least 0.3.
    bg_v = u(n, lo=0.2, hi=0.8)
    bg = _hsv_to_rgb(u(n), u(n, lo=0.15, hi=0.7), bg_v)
    up = torch.where(bg_v < 0.5, torch.rand(n, generator=generator) < 0.85, torch.rand(n, generator=generator) < 0.15)
    fg_v = (bg_v + torch.where(up, 1.0, -1.0) * u(n, lo=0.3, hi=0.5)).clamp(0.05, 1.0)
    fg = _hsv_to_rgb(u(n), u(n, lo=0.3, hi=1.0), fg_v)
    shade_dir = u(n, hi=2 * math.pi)
    shade_amp = u(n, lo=0.0, hi=0.15)

    # Background clutter: smooth colour noise at two scales, then random strokes.
    low = torch.randn(n, 3, 3, 3, generator=generator)
    mid = torch.randn(n, 1, 6, 6, generator=generator)
    num_strokes = 3
    stroke_ends = u(n, num_strokes, 2, 2, lo=-1.1, hi=1.1)
    stroke_rgb = u(n, num_strokes, 3)
    stroke_width = u(n, num_strokes, lo=0.6, hi=1.6)  # pixels
    stroke_alpha = u(n, num_strokes, lo=0.4, hi=0.9)

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(-coords, coords, indexing="ij")  # y points up
    grid = torch.stack([xx, yy], dim=-1)  # (S, S, 2)
    px_per_unit = size / 2

    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.uint8) if with_masks else None
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        smooth = 0.12 * _upsample(low[sl], size) + 0.07 * _upsample(mid[sl], size)
        grain = 0.015 * torch.randn(m, 1, size, size, generator=generator)
        img = bg[sl, :, None, None] + smooth + grain
        pts = grid.expand(m, size, size, 2)
        for k in range(num_strokes):
            d = _segment(pts, stroke_ends[sl, k, 0], stroke_ends[sl, k, 1]) * px_per_unit
            cover = (stroke_width[sl, k, None, None] / 2 + 0.5 - d).clamp(0, 1) * stroke_alpha[sl, k, None, None]
            img = img + cover[:, None] * (stroke_rgb[sl, k, :, None, None] - img)

        # The shape, in its own frame: rotate and scale the pixel grid.
        cos, sin = angle[sl].cos()[:, None, None], angle[sl].sin()[:, None, None]
        rel = (pts - center[sl, None, None]) / scale[sl, None, None, None]
        local = torch.stack([cos * rel[..., 0] + sin * rel[..., 1], -sin * rel[..., 0] + cos * rel[..., 1]], dim=-1)
        dist = torch.empty(m, size, size)
        lab = labels[sl]
        for c, name in enumerate(CLASSES):
            idx = (lab == c).nonzero().flatten()
            if len(idx):
                dist[idx] = _sdf(name, local[idx])
        alpha = (0.5 - dist * scale[sl, None, None] * px_per_unit).clamp(0, 1)  # anti-aliased edge
        direction = torch.stack([shade_dir[sl].cos(), shade_dir[sl].sin()], dim=-1)
        shade = 1 + shade_amp[sl, None, None] * (rel * direction[:, None, None]).sum(-1)
        fill = fg[sl, :, None, None] * shade[:, None]
        img = img + alpha[:, None] * (fill - img)
        images[sl] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        if masks is not None:
            masks[sl] = torch.where(alpha >= 0.5, lab[:, None, None] + 1, 0).to(torch.uint8)
    return (images, masks) if with_masks else images


def make_split(split: str, size: int, with_masks: bool = False) -> tuple[torch.Tensor, ...]:
    """Generate a split from scratch: ((N, 3, S, S) uint8 images, (N,) int64 labels), and with
    ``with_masks`` the (N, S, S) uint8 label maps of :func:`render_shapes`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if size not in SIZES:
        raise ValueError(f"the built-in data comes in sizes {SIZES}, got {size}")
    count, seed = SPLITS[split]
    generator = torch.Generator().manual_seed(1000 * seed + size)
    labels = torch.arange(count) % len(CLASSES)
    labels = labels[torch.randperm(count, generator=generator)]
    if with_masks:
        images, masks = render_shapes(labels, size, generator, with_masks=True)
        return images, labels, masks
    return render_shapes(labels, size, generator), labels


def load_split(
    split: str = "train", size: int = 32, cache: bool = True, with_masks: bool = False
) -> tuple[torch.Tensor, ...]:
    """The split's images and labels (and label maps, with ``with_masks``), from the cache if it is
    there, else generated (and cached)."""
    name = f"builtin-shapes-v{VERSION}-{size}px-{split}{'-masks' if with_masks else ''}.pt"
    path = cache_dir() / name
    keys = ("images", "labels", "masks") if with_masks else ("images", "labels")
    if cache and path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            return tuple(blob[k] for k in keys)
        except Exception:  # a truncated or foreign file: regenerate it
            pass
    data = make_split(split, size, with_masks)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save({**dict(zip(keys, data, strict=True)), "classes": list(CLASSES)}, path)
        except OSError:  # a read-only home still gets the data, only uncached
            pass
    return data


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


class BuiltinSegmentation(Dataset):
    """The built-in shapes with a class for every pixel: 0 for the background, ``label + 1`` where
    the shape is (lesson 10's dense prediction in miniature).

    Items are ``(image, label map)``: ``transform(image, mask)`` receives the (3, S, S) uint8 image
    and the (S, S) map as torchvision ``tv_tensors`` (so a flip or a crop moves both alike) and
    returns the float image and the map, which comes back as int64.
    """

    classes = ("background", *CLASSES)

    def __init__(self, split: str = "train", image_size: int = 32, transform: Callable | None = None):
        self.split, self.image_size, self.transform = split, image_size, transform
        self.images, self.labels, self.masks = load_split(split, image_size, with_masks=True)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = tv_tensors.Image(self.images[index]), tv_tensors.Mask(self.masks[index])
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        else:
            image = image.float() / 255
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()
