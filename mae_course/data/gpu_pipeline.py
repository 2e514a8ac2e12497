"""Lesson 09: decoding and augmenting images on the GPU; the DataLoader workers only read file bytes.

On ImageNet, one GPU trains a ViT faster than a handful of CPU cores can decode, crop and
resize JPEGs. This pipeline moves that work to the device:

    workers   path -> torchvision.io.read_file -> (bytes (L,) uint8, label, index)
    collate   EncodedBatch(data=[bytes, ...], labels (N,), indices (N,))
    device    GpuPretrainTransform(batch.data, device) -> images (N, 3, S, S) float32, normalized

``device_batches(encoded_loader(dataset, batch_size, ...), transform, device, seed_of)`` runs the
three steps and yields ``(images, labels)`` on the device, as a DataLoader of the CPU pipeline
would, preparing the next batches in a background thread on a side CUDA stream
(:mod:`~mae_course.data.prefetch`) while the current one trains.

Decoding: the JPEGs of a batch in one ``decode_jpeg`` call (nvjpeg on CUDA); other formats
(PNG, WebP, ... found by their first bytes, not their extension) on the CPU, then moved to the
device. Augmentation: :func:`mae_course.data.transforms.pretrain_transform`'s default,
RandomResizedCrop (scale 0.2-1, ratio 3/4-4/3, antialiased bicubic) + horizontal flip + ImageNet
normalization, for the whole batch in a few kernels (:mod:`~mae_course.data.batched_crops`):
the same distribution of crops as the CPU pipeline, and, for the same crop, the same pixels to
one grey level.

The CPU pipeline (PIL decoding and ``pretrain_transform`` inside the workers) stays the
reference and the fallback; :func:`mae_course.data.batches.choose_pipeline` picks one. Note: torchvision 0.29 deprecates
its image decoders in favour of TorchCodec; they still work, and their deprecation warning is
silenced here.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F

from ..errors import ConfigError, DataError
from .batched_crops import FILTERS, CropBoxes, crop_resize_flip, sample_crops
from .datasets import image_folder_split
from .image_files import UNREADABLE, check_size, quiet_torchvision_io, to_rgb
from .prefetch import prefetched
from .transforms import IMAGENET_MEAN, IMAGENET_STD

JPEG_MAGIC = (0xFF, 0xD8, 0xFF)  # every JPEG file starts with these bytes (SOI marker + the next marker)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- reading


class EncodedImageFolder(ImageFolder):
    """An ImageFolder whose items are the files' undecoded bytes: ``(bytes (L,) uint8, label, index)``.

    File discovery is torchvision's (one sub-folder per class, the usual image extensions). The
    index comes back with each item so that a file that fails to decode later, on the device, can
    be named: :meth:`path` maps it back. A file that cannot even be read, or whose header announces
    a decompression bomb (checked here, in the workers, before any decoder allocates it), is a
    :class:`DataError`, or, with ``skip_bad_images``, empty bytes, which the transform then reports
    and drops.
    """

    def __init__(self, root: str, skip_bad_images: bool = False):
        super().__init__(str(root), loader=read_file)
        self.skip_bad_images = skip_bad_images

    def path(self, index: int) -> str:
        return self.samples[index][0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path, label = self.samples[index]
        try:
            with quiet_torchvision_io():
                # read_file memory-maps the file; such a tensor cannot be sent from a worker process
                # (torch would share its file descriptor, already closed), so copy it to plain memory.
                data = read_file(path).clone()
            announced_size(data, path)
        except (OSError, RuntimeError, DataError) as e:
            if not self.skip_bad_images:
                raise e if isinstance(e, DataError) else DataError(f"cannot read image {path}: {e}") from None
            data = torch.empty(0, dtype=torch.uint8)
        return data, label, index


def announced_size(data: torch.Tensor, name: str) -> None:
    """Refuse a file whose header announces too many pixels (a decompression bomb) before any
    decoder allocates them (torchvision's PNG decoder crashes on one). Only the header is parsed;
    files PIL cannot parse are left to the decoders, which report them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_size below decides
            with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
                size = img.size
    except Image.DecompressionBombError as e:
        raise DataError(f"cannot read image {name}: {e}") from None
    except UNREADABLE:
        return
    check_size(*size, name)


def encoded_dataset(data: str, split: str = "pretrain", skip_bad_images: bool = False) -> EncodedImageFolder:
    """The :class:`EncodedImageFolder` of an ImageFolder path's ``split``, chosen as
    :func:`mae_course.data.datasets.make_dataset` does (:func:`~mae_course.data.datasets.split_folder`)."""
    return image_folder_split(data, split, lambda root: EncodedImageFolder(root, skip_bad_images=skip_bad_images))


class EncodedBatch(NamedTuple):
    """A batch of undecoded files. A NamedTuple of tensors, so ``pin_memory=True`` pins every part."""

    data: list[torch.Tensor]  # N 1-D uint8 tensors of different lengths (the file bytes)
    labels: torch.Tensor  # (N,) int64
    indices: torch.Tensor  # (N,) int64, dataset indices (for naming files)


def collate_encoded(items: Sequence[tuple[torch.Tensor, int, int]]) -> EncodedBatch:
    """DataLoader ``collate_fn`` for :class:`EncodedImageFolder`: keeps the byte tensors as a list."""
    return EncodedBatch(
        data=[data for data, _, _ in items],
        labels=torch.tensor([label for _, label, _ in items], dtype=torch.long),
        indices=torch.tensor([index for _, _, index in items], dtype=torch.long),
    )


def batch_paths(dataset: Dataset, indices: torch.Tensor) -> list[str]:
    """The file paths of a batch's ``indices`` (a :class:`Subset` is looked through)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if not isinstance(dataset, EncodedImageFolder):
        raise TypeError(f"expected an EncodedImageFolder, got {type(dataset).__name__}")
    return [dataset.path(i) for i in indices.tolist()]


# ---------------------------------------------------------------------------------------- decoding


def is_jpeg(data: torch.Tensor) -> bool:
    """Whether a file's bytes (L,) uint8 are a JPEG, judged by its first three bytes."""
    return data.numel() >= 3 and tuple(data[:3].tolist()) == JPEG_MAGIC


def decode_on_cpu(data: torch.Tensor) -> torch.Tensor:
    """Decode any image file's bytes (L,) uint8 to (3, H, W) uint8 on the CPU.

    torchvision's decoders first (JPEG, PNG, WebP, GIF), then PIL for the rest of what the CPU
    pipeline reads (BMP, TIFF, ...). Raises ``ValueError`` when neither can, or when the header
    announces a decompression bomb.
    """
    try:
        announced_size(data, "the file")
    except DataError as e:
        raise ValueError(str(e).removeprefix("cannot read image the file: ")) from None
    try:
        with quiet_torchvision_io():
            image = decode_image(data, mode=ImageReadMode.RGB)
        return image if image.dtype == torch.uint8 else F.to_dtype(image, torch.uint8, scale=True)  # 16-bit PNG
    except RuntimeError as first:
        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
                return F.pil_to_tensor(to_rgb(img))
        except Exception as e:  # PIL raises many types for broken files
            raise ValueError(f"{first}; PIL: {e}") from None


# ---------------------------------------------------------------------------------------- the transform


class GpuPretrainTransform:
    """Decode a batch of image files on ``device`` and augment it as the paper does.

    ``transform(data, device)`` takes N files' bytes (1-D uint8 CPU tensors) and returns
    (N, 3, size, size) float32 on ``device``: RandomResizedCrop(size, scale, ratio) with
    antialiasing, a horizontal flip with probability ``flip_p``, then /255 and ImageNet
    normalization (the constants of :mod:`mae_course.data.transforms`), for the whole batch at once
    (:mod:`mae_course.data.batched_crops`).

    Args:
        size: output side S in pixels.
        scale, ratio: RandomResizedCrop's area fraction and aspect ratio (width / height) ranges.
        interpolation: "bicubic" (default: the official MAE recipe's and the CPU pipeline's, so
            switching pipelines does not change the training data) or "bilinear" (a little cheaper).
        flip_p: probability of a horizontal flip.
        skip_bad_images: an undecodable file is a :class:`DataError` naming it (default), or, when
            True, it is dropped from its batch, listed in ``bad_files`` (``skipped`` counts them:
            each file once, however often it is met; later batches leave it out before decoding)
            and logged as a warning once per file. A batch with no decodable file at all is always
            an error (dropping it would desynchronise the processes of a distributed run).

    Randomness: the crop boxes and flips of a batch are drawn together, on the CPU, from
    ``generator`` (a CPU ``torch.Generator``), or from torch's global generator when None
    (:func:`~mae_course.data.batched_crops.sample_crops`: torchvision's distribution).
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        flip_p: float = 0.5,
        skip_bad_images: bool = False,
    ):
        if size < 1:
            raise ConfigError(f"image size must be positive, got {size}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"crop ratio must satisfy 0 < min <= max, got {ratio}")
        if interpolation not in FILTERS:
            raise ConfigError(f"unknown interpolation {interpolation!r}; choose one of {', '.join(FILTERS)}")
        if not 0 <= flip_p <= 1:
            raise ConfigError(f"flip probability must be in [0, 1], got {flip_p}")
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.interpolation = interpolation
        self.flip_p = flip_p
        self.skip_bad_images = skip_bad_images
        self.bad_files: list[str] = []  # distinct files dropped so far, in the order met

    @property
    def skipped(self) -> int:
        """Distinct files dropped so far."""
        return len(self.bad_files)

    def __call__(
        self,
        data: Sequence[torch.Tensor],
        device: torch.device | str,
        paths: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """N files' bytes -> (N', 3, S, S) float32 on ``device`` (N' < N only when skipping bad files)."""
        images, _ = self.decode(data, device, paths)
        return self.augment(images, generator)

    # ---------------------------------------------------------------- decoding
    def decode(
        self, data: Sequence[torch.Tensor], device: torch.device | str, paths: Sequence[str] | None = None
    ) -> tuple[list[torch.Tensor], list[int]]:
        """Decode N files' bytes to (3, H_i, W_i) uint8 images on ``device``.

        Returns the images and the positions in ``data`` they come from (all of them unless
        bad files were skipped). ``paths`` name the files in errors and warnings.

        The JPEGs go to the batched decoder together (nvjpeg on CUDA). One bad file makes that whole
        call fail, so a failed call is split in halves, and those again, until the file is alone:
        about 2 log2(N) more calls, once per bad file, since a file skipped once is left out of every
        later batch before decoding. Other formats, and JPEGs nvjpeg refuses, decode on the CPU.
        """
        device = torch.device(device)
        names = list(paths) if paths is not None else [f"image {k} of the batch" for k in range(len(data))]
        known_bad = set(self.bad_files) if self.skip_bad_images else set()
        todo = [k for k in range(len(data)) if names[k] not in known_bad]
        decoded: dict[int, torch.Tensor] = {}
        errors: dict[int, str] = {}
        self._decode_jpegs([k for k in todo if is_jpeg(data[k])], data, device, decoded)
        for k in todo:
            if k not in decoded:
                try:
                    decoded[k] = decode_on_cpu(data[k]).to(device, non_blocking=True)
                except ValueError as e:
                    errors[k] = str(e)
        kept = [k for k in range(len(data)) if k in decoded]
        if errors:
            self._report([names[k] for k in errors], list(errors.values()), not kept)
        elif not kept:
            raise DataError(f"no image of a batch could be decoded: {'; '.join(names)} (all skipped before)")
        return [decoded[k] for k in kept], kept

    def _decode_jpegs(
        self, positions: list[int], data: Sequence[torch.Tensor], device: torch.device, decoded: dict[int, torch.Tensor]
    ) -> None:
        """Decode the JPEGs at ``positions`` in batched calls, halving a call that fails; those left
        out of ``decoded`` are for the CPU decoders (which then say why they fail, if they do)."""
        if not positions:
            return
        try:
            with quiet_torchvision_io():
                out = decode_jpeg([data[k] for k in positions], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            if len(positions) > 1:
                half = len(positions) // 2
                self._decode_jpegs(positions[:half], data, device, decoded)
                self._decode_jpegs(positions[half:], data, device, decoded)
            return
        decoded.update(zip(positions, out, strict=True))

    def _report(self, paths: list[str], messages: list[str], whole_batch: bool) -> None:
        listed = "; ".join(f"{p} ({m})" for p, m in zip(paths, messages, strict=True))
        if not self.skip_bad_images:
            raise DataError(f"cannot decode image {listed}. Remove it, or pass --skip-bad-images to skip it")
        if whole_batch:
            raise DataError(f"no image of a batch could be decoded: {listed}")
        for path, message in zip(paths, messages, strict=True):
            if path not in self.bad_files:
                self.bad_files.append(path)
                log.warning("skipped undecodable image %s: %s", path, message)

    # ---------------------------------------------------------------- augmenting
    def sample(self, images: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> CropBoxes:
        """Draw the crop boxes and flips of N images (only their shapes (..., H, W) are read)."""
        sizes = torch.tensor([tuple(image.shape[-2:]) for image in images])
        return sample_crops(sizes, self.scale, self.ratio, self.flip_p, generator)

    def apply(self, images: Sequence[torch.Tensor], boxes: CropBoxes) -> torch.Tensor:
        """Crop, resize, flip and normalize: N images (3, H_i, W_i) uint8 -> (N, 3, S, S) float32."""
        if not images:
            raise DataError("no images to augment")
        pixels = crop_resize_flip(list(images), boxes, self.size, self.interpolation)  # 0-255, whole grey levels
        return F.normalize(pixels.div_(255), IMAGENET_MEAN, IMAGENET_STD)

    def augment(self, images: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """N decoded images (3, H_i, W_i) uint8 -> (N, 3, S, S) float32, randomly cropped and flipped."""
        return self.apply(images, self.sample(images, generator))


# ---------------------------------------------------------------------------------------- the loop


def encoded_loader(dataset: Dataset, batch_size: int, **kwargs) -> DataLoader:
    """A DataLoader of :class:`EncodedBatch` (the other arguments are DataLoader's)."""
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_encoded, **kwargs)


def device_batches(
    loader: DataLoader,
    transform: GpuPretrainTransform,
    device: torch.device | str,
    seed_of: Callable[[int], int] | None = None,
    first: int = 0,
    prefetch: int = 2,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images (N, 3, S, S) float32, labels (N,))`` on ``device`` for each batch of ``loader``.

    ``loader`` yields :class:`EncodedBatch` (see :func:`encoded_loader`) over an
    :class:`EncodedImageFolder` or a Subset of one; files dropped as bad take their labels along.

    Batch k (counted from ``first``: a resumed epoch starts there) draws its crops and flips from
    a generator seeded with ``seed_of(k)``, so that they do not depend on where a run resumed or
    on what was prepared ahead. Then up to ``prefetch`` batches are decoded and augmented ahead,
    in a background thread on a side CUDA stream (:func:`~mae_course.data.prefetch.prefetched`).
    Without ``seed_of`` the crops come from torch's global generator, and nothing is prepared ahead
    (a second thread would draw from it too).
    """
    device = torch.device(device)

    def produce() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k, batch in enumerate(loader, start=first):
            generator = torch.Generator().manual_seed(seed_of(k)) if seed_of is not None else None
            images, kept = transform.decode(batch.data, device, batch_paths(loader.dataset, batch.indices))
            labels = batch.labels[kept] if len(kept) < len(batch.labels) else batch.labels
            yield transform.augment(images, generator), labels.to(device, non_blocking=True)

    if seed_of is None or prefetch < 1:
        return produce()
    return prefetched(produce(), device, prefetch)
