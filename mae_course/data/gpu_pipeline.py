"""Lesson 09: decoding and augmenting images on the GPU; the DataLoader workers only read file bytes.

On ImageNet, one GPU trains a ViT faster than a handful of CPU cores can decode, crop and
resize JPEGs. This pipeline moves that work to the device:

    workers   path -> torchvision.io.read_file -> (bytes (L,) uint8, label, index)
    collate   EncodedBatch(data=[bytes, ...], labels (N,), indices (N,))
    device    GpuPretrainTransform(batch.data, device) -> images (N, 3, S, S) float32, normalized

``device_batches(encoded_loader(dataset, batch_size, ...), transform, device)`` runs the three
steps and yields ``(images, labels)`` on the device, as a DataLoader of the CPU pipeline would.

Decoding: the JPEGs of a batch in one ``decode_jpeg`` call (nvjpeg on CUDA); other formats
(PNG, WebP, ... found by their first bytes, not their extension) on the CPU, then moved to the
device. Augmentation: exactly :func:`mae_course.transforms.pretrain_transform`'s default,
RandomResizedCrop (scale 0.2-1, ratio 3/4-4/3, antialiased) + horizontal flip + ImageNet
normalization, drawing the same random numbers in the same order: with the same seed the two
pipelines crop and flip an image identically.

The CPU pipeline (PIL decoding and ``pretrain_transform`` inside the workers) stays the
reference and the fallback; :func:`mae_course.data.batches.choose_pipeline` picks one. Note: torchvision 0.29 deprecates
its image decoders in favour of TorchCodec; they still work, and their deprecation warning is
silenced here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from ..errors import ConfigError, DataError
from .datasets import image_folder_split
from .image_files import UNREADABLE, check_size, quiet_torchvision_io, to_rgb
from .transforms import IMAGENET_MEAN, IMAGENET_STD

INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
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


# ---------------------------------------------------------------------------------------- augmenting


class CropFlip(NamedTuple):
    """One image's random augmentation: the crop box (as torchvision's get_params) and the flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


@contextlib.contextmanager
def _drawing_from(generator: torch.Generator | None) -> Iterator[None]:
    """Make torch's global CPU generator draw from ``generator`` for a while (None: leave it).

    torchvision's ``get_params`` draws from the global generator; this lets it be reused as is
    while the draws advance ``generator`` and leave the global state untouched.
    """
    if generator is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.get_rng_state())


class GpuPretrainTransform:
    """Decode a batch of image files on ``device`` and augment it as the paper does.

    ``transform(data, device)`` takes N files' bytes (1-D uint8 CPU tensors) and returns
    (N, 3, size, size) float32 on ``device``: RandomResizedCrop(size, scale, ratio) with
    antialiasing, a horizontal flip with probability ``flip_p``, then /255 and ImageNet
    normalization (the constants of :mod:`mae_course.transforms`).

    Args:
        size: output side S in pixels.
        scale, ratio: RandomResizedCrop's area fraction and aspect ratio (width / height) ranges.
        interpolation: "bicubic" (default: the official MAE recipe's and the CPU pipeline's, so
            switching pipelines does not change the training data) or "bilinear" (a little cheaper).
        flip_p: probability of a horizontal flip.
        skip_bad_images: an undecodable file is a :class:`DataError` naming it (default), or, when
            True, it is dropped from its batch, listed in ``bad_files`` (``skipped`` counts them:
            each file once, however often it is met) and logged as a warning once per file. A batch with no decodable file at all is always an error
            (dropping it would desynchronise the processes of a distributed run).

    Randomness: crop boxes and flips are drawn on the CPU, per image, with torchvision's own
    ``RandomResizedCrop.get_params`` then one ``torch.rand(1)`` for the flip, the order of
    ``pretrain_transform``. They come from torch's global generator (which the trainer seeds and
    checkpoints), or from ``generator`` (a CPU ``torch.Generator``) when one is given.
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
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
        if not 0 <= flip_p <= 1:
            raise ConfigError(f"flip probability must be in [0, 1], got {flip_p}")
        self.size, self.scale, self.ratio = size, list(scale), list(ratio)
        self.interpolation = INTERPOLATIONS[interpolation]
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
        """
        device = torch.device(device)
        names = list(paths) if paths is not None else [f"image {k} of the batch" for k in range(len(data))]
        decoded: list[torch.Tensor | None] = [None] * len(data)
        jpegs = [k for k, d in enumerate(data) if is_jpeg(d)]
        if jpegs:
            try:  # one call for the whole batch: on CUDA, nvjpeg's batched decoder
                with quiet_torchvision_io():
                    out = decode_jpeg([data[k] for k in jpegs], mode=ImageReadMode.RGB, device=device)
                for k, image in zip(jpegs, out, strict=True):
                    decoded[k] = image
            except RuntimeError:
                pass  # a bad file fails the whole call: decode one by one below to find it
        errors: dict[int, str] = {}
        for k, d in enumerate(data):
            if decoded[k] is None:
                try:
                    decoded[k] = self._decode_one(d, device)
                except ValueError as e:
                    errors[k] = str(e)
        if errors:
            self._report([names[k] for k in errors], list(errors.values()), len(errors) == len(data))
        kept = [k for k in range(len(data)) if k not in errors]
        return [decoded[k] for k in kept], kept

    @staticmethod
    def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
        if is_jpeg(data) and device.type != "cpu":
            try:
                with quiet_torchvision_io():
                    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                pass  # e.g. a JPEG flavour nvjpeg does not handle: the CPU decoders may
        return decode_on_cpu(data).to(device, non_blocking=True)

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
    def sample_params(self, images: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> list[CropFlip]:
        """Draw each image's crop box and flip; only the images' shapes (..., H, W) are read."""
        params = []
        with _drawing_from(generator):
            for image in images:
                top, left, height, width = RandomResizedCrop.get_params(image, self.scale, self.ratio)
                flip = torch.rand(1).item() < self.flip_p  # RandomHorizontalFlip's draw
                params.append(CropFlip(top, left, height, width, flip))
        return params

    def apply(self, images: Sequence[torch.Tensor], params: Sequence[CropFlip]) -> torch.Tensor:
        """Crop, resize, flip and normalize: N images (3, H_i, W_i) uint8 -> (N, 3, S, S) float32.

        Each crop is resized with torchvision's antialiased kernel on its uint8 tensor (rounded back
        to uint8, as the CPU pipeline does); the batch is then converted and normalized at once.
        """
        if not images:
            raise DataError("no images to augment")
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.uint8, device=images[0].device)
        for k, (image, p) in enumerate(zip(images, params, strict=True)):
            crop = F.resized_crop(
                image, p.top, p.left, p.height, p.width, [self.size, self.size], self.interpolation, antialias=True
            )
            out[k] = F.horizontal_flip(crop) if p.flip else crop
        return F.normalize(F.to_dtype(out, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)

    def augment(self, images: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """N decoded images (3, H_i, W_i) uint8 -> (N, 3, S, S) float32, randomly cropped and flipped."""
        return self.apply(images, self.sample_params(images, generator))


# ---------------------------------------------------------------------------------------- the loop


def encoded_loader(dataset: Dataset, batch_size: int, **kwargs) -> DataLoader:
    """A DataLoader of :class:`EncodedBatch` (the other arguments are DataLoader's)."""
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_encoded, **kwargs)


def device_batches(
    loader: DataLoader,
    transform: GpuPretrainTransform,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images (N, 3, S, S) float32, labels (N,))`` on ``device`` for each batch of ``loader``.

    ``loader`` yields :class:`EncodedBatch` (see :func:`encoded_loader`) over an
    :class:`EncodedImageFolder` or a Subset of one; files dropped as bad take their labels along.
    """
    for batch in loader:
        images, kept = transform.decode(batch.data, device, batch_paths(loader.dataset, batch.indices))
        labels = batch.labels[kept] if len(kept) < len(batch.labels) else batch.labels
        yield transform.augment(images, generator), labels.to(device, non_blocking=True)
