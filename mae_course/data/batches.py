"""Lessons 05 and 09: from a dataset to batches on the device, whichever pipeline decodes them.

Two pipelines deliver pretraining images. The CPU one decodes and augments in DataLoader
workers (:func:`~mae_course.data.transforms.pretrain_transform`); the GPU one lets the workers
only read the files and decodes and augments on the device
(:mod:`~mae_course.data.gpu_pipeline`). :class:`PretrainingImages` hides the difference:
``images.loader(...).epoch(epoch, indices)`` yields ``(imgs,)`` tuples of (N, 3, S, S)
normalized float32 images on the device either way.

Training batches come from a :class:`TrainingLoader`: one DataLoader for the whole run, whose
worker processes start once and persist across epochs, and whose randomness (crops, flips) is a
function of (seed, process rank, epoch, image) only (:func:`stream_seed`): every process of a
torchrun job and every worker draws its own, and a resumed run, even mid-epoch, draws what the
uninterrupted run drew. :func:`make_loader` serves evaluation, in order. The workers of both
ignore Ctrl-C (the main process stops the run at a step boundary and ends them), and memory is
pinned only for data that lives on the CPU and goes to a GPU.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

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
    num_workers: int = 0,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """Batches of the whole of ``dataset``, in order (evaluation: the last batch may be smaller)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pins_memory(dataset, device),
        worker_init_fn=_ignore_ctrl_c if num_workers else None,
        collate_fn=collate_fn,
    )


def stream_seed(seed: int, *parts: int) -> int:
    """The seed of one random stream of a run: ``seed`` and the numbers that tell the streams apart
    (process rank, epoch, batch or image index), mixed by numpy's SeedSequence so that neighbouring
    inputs give unrelated streams."""
    entropy = [seed % 2**64, *(int(p) for p in parts)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))  # < 2**63


class SeededItems(Dataset):
    """``dataset[index]`` drawn from its own seed: item ``(index, seed)`` seeds torch's generator (in the
    worker process that reads it), then reads ``dataset[index]``, so its random transform does not
    depend on which worker reads it, nor on what that worker read before."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.manual_seed(seed)
        return self.dataset[index]


class EpochOrder(Sampler):
    """The sampler of a :class:`TrainingLoader`: this epoch's indices, set by :meth:`set_epoch`, each
    with the seed of its random transform, ``stream_seed(seed, rank, epoch, index)``, when ``seeded``."""

    def __init__(self, seed: int = 0, rank: int = 0, seeded: bool = True):
        self.seed, self.rank, self.seeded = seed, rank, seeded
        self.epoch, self.indices = 0, []

    def set_epoch(self, epoch: int, indices: Sequence[int]) -> None:
        self.epoch, self.indices = epoch, list(indices)

    def __iter__(self) -> Iterator[Any]:
        if not self.seeded:
            return iter(self.indices)
        return ((i, stream_seed(self.seed, self.rank, self.epoch, i)) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TrainingLoader:
    """The training batches of a whole run, from one DataLoader built once.

        loader = TrainingLoader(dataset, batch_size, device, num_workers, seed=cfg.seed, rank=rt.rank)
        for imgs, labels in loader.epoch(epoch, indices):   # full batches of these indices, in order
            ...

    With workers, they start once and persist across epochs (``persistent_workers``: no start-up
    each epoch), and each item is drawn from its own seed (:class:`SeededItems`), a function of
    (seed, rank, epoch, index). Without workers, items are read in this process, whose generator
    the trainer seeds (``seed + rank``) and checkpoints. Either way, every process draws its own
    crops and flips, and a resumed run draws what the uninterrupted one drew.
    ``seeded_items=False`` is for datasets without randomness (the GPU pipeline's file bytes).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device: torch.device,
        num_workers: int = 0,
        seed: int = 0,
        rank: int = 0,
        collate_fn: Callable | None = None,
        seeded_items: bool = True,
    ):
        self.order = EpochOrder(seed, rank, seeded=seeded_items and num_workers > 0)
        self.loader = DataLoader(
            SeededItems(dataset) if self.order.seeded else dataset,
            batch_size=batch_size,
            sampler=self.order,
            drop_last=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=pins_memory(dataset, device),
            worker_init_fn=_ignore_ctrl_c if num_workers else None,
            generator=torch.Generator().manual_seed(stream_seed(seed, rank)),
            collate_fn=collate_fn,
        )
        self.dataset = dataset

    def epoch(self, epoch: int, indices: Sequence[int]) -> DataLoader:
        """The loader, set to yield the full batches of ``indices`` for ``epoch``."""
        self.order.set_epoch(epoch, indices)
        return self.loader


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

    def loader(self, batch_size: int, num_workers: int = 0, seed: int = 0, rank: int = 0) -> PretrainingBatches:
        """The run's batches: ``.epoch(epoch, indices, first)`` yields ``(imgs,)`` for each full batch."""
        return PretrainingBatches(self, batch_size, num_workers, seed, rank)

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


class PretrainingBatches:
    """The pretraining batches of a run, by epoch, from either pipeline (see :meth:`PretrainingImages.loader`)."""

    def __init__(self, images: PretrainingImages, batch_size: int, num_workers: int, seed: int, rank: int):
        self.images, self.seed, self.rank = images, seed, rank
        gpu = images.gpu_transform is not None
        self.training = TrainingLoader(
            images.dataset,
            batch_size,
            images.device,
            num_workers,
            seed,
            rank,
            collate_fn=collate_encoded if gpu else None,
            seeded_items=not gpu,
        )

    def epoch(self, epoch: int, indices: Sequence[int], first: int = 0) -> Iterator[tuple[torch.Tensor]]:
        """``(imgs,)`` for each full batch of ``indices``: (N, 3, S, S) float32 on the device. ``first``
        is the number of the first batch in its epoch (a resumed epoch does not start at 0): with the
        GPU pipeline, batch k of an epoch crops with the seed ``stream_seed(seed, rank, epoch, k)``."""
        images, loader = self.images, self.training.epoch(epoch, indices)
        if images.gpu_transform is None:
            return ((imgs.to(images.device, non_blocking=True),) for imgs, _ in loader)
        seed_of = functools.partial(stream_seed, self.seed, self.rank, epoch)
        batches = device_batches(loader, images.gpu_transform, images.device, seed_of, first)
        return ((imgs,) for imgs, _ in batches)
