"""Lessons 05-07: the image transforms of the paper's recipes, from torchvision's v2 transforms.

Every pipeline takes a PIL image or a (C, H, W) uint8 tensor and returns a normalized
(C, H, W) float32 tensor, using ImageNet's channel statistics as the official code does.
They take sizes and rates, not a job's settings, so any code can build them.

    pretrain_transform   RandomResizedCrop (scale 0.2-1) + flip, or one of Table 1e's variants
    finetune_transform   RandomResizedCrop (scale 0.08-1) + flip, RandAugment, random erasing
    probe_transform      none (the evaluation crop) or RandomResizedCrop + flip
    eval_transform       resize to size / crop fraction, center crop
    segmentation_transform   a flip of the image and its label map together (lesson 10)
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Table 1e of the paper: no augmentation, a fixed-size crop, a random-size crop (the
# default), and a random-size crop with colour jitter.
AUGMENTATIONS = ("none", "fixed-crop", "crop", "crop+jitter")


def _to_normalized_float() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def pretrain_transform(
    size: int,
    augment: str = "crop",
    scale: tuple[float, float] = (0.2, 1.0),
    interpolation: InterpolationMode = InterpolationMode.BICUBIC,
) -> v2.Compose:
    """The pretraining augmentation: by default RandomResizedCrop (scale 0.2-1, bicubic)
    and a horizontal flip. ``augment`` picks one of :data:`AUGMENTATIONS`."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    steps: list[v2.Transform] = [v2.ToImage()]
    if augment == "none":
        steps += [v2.Resize(size, interpolation=interpolation, antialias=True), v2.CenterCrop(size)]
    elif augment == "fixed-crop":
        steps += [
            v2.Resize(round(size * 8 / 7), interpolation=interpolation, antialias=True),
            v2.RandomCrop(size),
            v2.RandomHorizontalFlip(),
        ]
    else:
        steps += [
            v2.RandomResizedCrop(size, scale=scale, interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if augment == "crop+jitter":
            steps.append(v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4))
    return v2.Compose(steps + _to_normalized_float())


def eval_transform(
    size: int, crop_fraction: float = 224 / 256, interpolation: InterpolationMode = InterpolationMode.BICUBIC
) -> v2.Compose:
    """Evaluation: resize the shorter side to size / crop_fraction (256 for 224), center-crop.

    ``crop_fraction=1`` keeps the whole image (for data already at the model's size).
    """
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(round(size / crop_fraction), interpolation=interpolation, antialias=True),
            v2.CenterCrop(size),
            *_to_normalized_float(),
        ]
    )


def denormalize(imgs: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalization: (N, 3, H, W) -> pixel values in [0, 1] (clamped)."""
    mean = imgs.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = imgs.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (imgs * std + mean).clamp(0, 1)


def finetune_transform(size: int, crop_min_scale: float = 0.08, randaug: int = 9, reprob: float = 0.25) -> v2.Compose:
    """Fine-tuning's augmentation: RandomResizedCrop + flip, RandAugment (2 ops at magnitude
    ``randaug``; 0: off), normalization, random erasing with probability ``reprob`` (0: off)."""
    steps: list[v2.Transform] = [
        v2.ToImage(),
        v2.RandomResizedCrop(
            size, scale=(crop_min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True
        ),
        v2.RandomHorizontalFlip(),
    ]
    if randaug:
        steps.append(v2.RandAugment(num_ops=2, magnitude=randaug))
    steps += _to_normalized_float()
    if reprob:
        steps.append(v2.RandomErasing(p=reprob, value=0))
    return v2.Compose(steps)


def segmentation_transform(train: bool = True) -> v2.Compose:
    """Segmentation's input: a random horizontal flip of the image and its label map together
    (training only), then the image normalized; the map keeps its classes."""
    steps: list[v2.Transform] = [v2.RandomHorizontalFlip()] if train else []
    return v2.Compose([*steps, *_to_normalized_float()])


PROBE_AUGMENTATIONS = ("none", "crop")


def probe_transform(size: int, augment: str = "none", crop_fraction: float = 224 / 256) -> v2.Compose:
    """Linear probing's input: the evaluation crop ("none"), or RandomResizedCrop + flip ("crop",
    the paper's probe on ImageNet)."""
    if augment not in PROBE_AUGMENTATIONS:
        raise ValueError(f"unknown probe augmentation {augment!r}; choose one of {', '.join(PROBE_AUGMENTATIONS)}")
    if augment == "none":
        return eval_transform(size, crop_fraction)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
            *_to_normalized_float(),
        ]
    )
