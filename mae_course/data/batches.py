"""Lessons 05 and 09: from a dataset to batches on the device, whichever pipeline decodes them.

Two pipelines deliver pretraining images. The CPU one decodes and augments in DataLoader
workers (:func:`~mae_course.data.transforms.pretrain_transform`); the GPU one lets the workers
only read the files and decodes and augments on the device
(:mod:`~mae_course.data.gpu_pipeline`). :class:`PretrainingImages` hides the difference:
``images.batches(indices, ...)`` yields ``(imgs,)`` tuples of (N, 3, S, S) normalized float32
images on the device either way.

:func:`make_loader` is the one DataLoader of the course: its workers ignore Ctrl-C (the main
process stops the run at a step boundary and ends them), and it pins memory only for data that
lives on the CPU and goes to a GPU.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..errors import ConfigError, DataError
from .datasets import BUILTIN, is_image_folder, make_dataset, skipped_images
from .gpu_pipeline import GpuPretrainTransform, collate_encoded, device_batches, encoded_dataset
from .transforms import AUGMENTATIONS, eval_transform, pretrain_transform

PIPELINES = ("auto", "cpu", "gpu")


def choose_pipeline(pipeline: str, device: torch.device | str, data: str, augment: str = "crop") -> str:
    """Resolve ``pipeline`` ("auto", "cpu" or "gpu") to "cpu" or "gpu".

    "auto" is "gpu" when the device is CUDA, the data an ImageFolder path and the augmentation the
    default "crop" (the only one implemented on the device); otherwise "cpu". "gpu" on a CPU device
    is allowed (it runs, slowly: the tests use it).
    """
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown data pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    if pipeline == "auto":
        usable = torch.device(device).type == "cuda" and is_image_folder(data) and augment == "crop"
        return "gpu" if usable else "cpu"
    if pipeline == "gpu" and not is_image_folder(data):
        raise ConfigError(f"the gpu data pipeline reads image files; {data!r} is not an ImageFolder path")
    if pipeline == "gpu" and augment != "crop":
        raise ConfigError(f"the gpu data pipeline implements only the 'crop' augmentation, not {augment!r}")
    return pipeline


def pins_memory(dataset: Dataset, device: torch.device) -> bool:
    """Whether a loader of ``dataset`` for ``device`` should pin its batches: only on the way from
    the CPU to a GPU. (PyTorch refuses to pin tensors that are already on a GPU.)"""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if isinstance(dataset, TensorDataset):
        return device.type == "cuda" and all(t.device.type == "cpu" for t in dataset.tensors)
    return device.type == "cuda"


def _ignore_ctrl_c(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops at the end of the step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    indices: Sequence[int] | None = None,
    num_workers: int = 0,
    seed: int = 0,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """Batches of ``dataset`` in the order of ``indices`` (training: full batches only), or of the
    whole dataset in order (evaluation: the last batch may be smaller)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        drop_last=indices is not None,
        num_workers=num_workers,
        pin_memory=pins_memory(dataset, device),
        worker_init_fn=_ignore_ctrl_c if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn,
    )


class PretrainingImages:
    """The images a pretraining run learns from, decoded and augmented by either pipeline.

    Args:
        data: "builtin", a named dataset, or an ImageFolder path.
        image_size: side S of the (square) training crops.
        device: where the batches go (and, with the GPU pipeline, where images are decoded).
        pipeline: "auto", "cpu" or "gpu" (see :func:`choose_pipeline`).
        augment, crop_min_scale: the augmentation (:data:`~mae_course.data.transforms.AUGMENTATIONS`).
        root, download, skip_bad_images: where named datasets live, whether to fetch them, and
            whether unreadable files stop the run or are skipped and counted.
        subset: use only the first ``subset`` images.
    """

    def __init__(
        self,
        data: str,
        image_size: int,
        device: torch.device,
        pipeline: str = "auto",
        augment: str = "crop",
        crop_min_scale: float = 0.2,
        root: str | None = None,
        download: bool = False,
        skip_bad_images: bool = False,
        subset: int | None = None,
    ):
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        self.data, self.image_size, self.device = data, image_size, device
        self.root, self.skip_bad_images = root, skip_bad_images
        self.pipeline = choose_pipeline(pipeline, device, data, augment)
        self.gpu_transform = None
        if self.pipeline == "gpu":  # workers read file bytes; decoding and augmentation run on the device
            self.dataset: Dataset = encoded_dataset(data, "pretrain", skip_bad_images)
            self.gpu_transform = GpuPretrainTransform(
                image_size, (crop_min_scale, 1.0), skip_bad_images=skip_bad_images
            )
        else:
            transform = pretrain_transform(image_size, augment, (crop_min_scale, 1.0))
            self.dataset = make_dataset(data, "pretrain", transform, image_size, root, download, skip_bad_images)
        if subset is not None:
            self.dataset = Subset(self.dataset, range(min(subset, len(self.dataset))))

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(
        self, indices: Sequence[int], batch_size: int, num_workers: int = 0, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor]]:
        """``(imgs,)`` for each full batch of ``indices``: (N, 3, S, S) float32 on the device."""
        gpu = self.gpu_transform is not None
        loader = make_loader(self.dataset, batch_size, self.device, indices, num_workers, seed,
                             collate_fn=collate_encoded if gpu else None)  # fmt: skip
        if gpu:
            return ((imgs,) for imgs, _ in device_batches(loader, self.gpu_transform, self.device))
        return ((imgs.to(self.device, non_blocking=True),) for imgs, _ in loader)

    def skipped(self) -> int:
        """Distinct unreadable files skipped so far, in this process."""
        return self.gpu_transform.skipped if self.gpu_transform is not None else skipped_images(self.dataset)

    def held_out(self, count: int) -> torch.Tensor | None:
        """(N, 3, S, S) of the first ``count`` readable held-out images, center-cropped, for figures:
        the validation split, or the training images for a folder that has none. None if count is 0."""
        if count == 0:
            return None
        transform = eval_transform(self.image_size, 1.0 if self.data == BUILTIN else 224 / 256)
        try:
            images = make_dataset(self.data, "val", transform, self.image_size, self.root, False, self.skip_bad_images)
        except DataError:  # an image folder without val/: its own images serve for the figures
            images = make_dataset(
                self.data, "pretrain", transform, self.image_size, self.root, False, self.skip_bad_images
            )
        return torch.stack([images[i][0] for i in range(min(count, len(images)))]).to(self.device)
