"""Choosing a dataset by name or path.

    builtin      the generated shapes (no download), 10 classes, 32 or 64 px
    cifar10      CIFAR-10 through torchvision (60k 32x32 images, 10 classes, ~170 MB)
    stl10        STL-10 through torchvision (5k labelled + 100k unlabelled 96x96 images, ~2.6 GB)
    imagenette   Imagenette through torchvision (10 easy ImageNet classes, the 320 px version, ~330 MB)
    PATH         any folder of class sub-folders of images; with train/ and val/ inside
                 (ImageNet-1K's layout) those splits are used

Real datasets live under ``--data-root`` (default ``~/.cache/mae_course/datasets``) and are
downloaded there only when asked (``--download``). A missing dataset is one clear message
saying where to put it or how to get it. An unreadable image file is an error that names the
file, or, with ``skip_bad_images``, is skipped, counted and reported.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv
from torchvision.datasets import ImageFolder

from .data.builtin import BuiltinShapes
from .data.shapes import cache_dir
from .errors import DataError

BUILTIN = "builtin"
NAMED = ("builtin", "cifar10", "stl10", "imagenette")
SPLITS = ("pretrain", "train", "val")

log = logging.getLogger(__name__)


def default_data_root() -> Path:
    return Path(os.environ.get("MAE_COURSE_DATA", cache_dir() / "datasets"))


def default_workers(data: str) -> int:
    """DataLoader workers: none for the in-memory built-in data, else one per spare CPU core, at most 8."""
    if data == BUILTIN:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


def builtin_source_size(image_size: int) -> int:
    """The built-in data is rendered at 32 or 64 px; use the smallest that covers ``image_size``."""
    return 32 if image_size <= 32 else 64


def open_rgb(path: str) -> Image.Image:
    """Read an image file fully, as RGB; an unreadable file is a DataError naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the whole file to be decoded
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


class CheckedImageFolder(ImageFolder):
    """An ImageFolder that names any unreadable file, or skips it and counts the skip.

    With ``skip_bad_images``, an unreadable file is replaced by the next readable one (so the
    batch stays full); ``skipped`` counts them across DataLoader workers and each one is logged.
    """

    def __init__(self, root: str, transform: Callable | None = None, skip_bad_images: bool = False):
        super().__init__(root, transform=transform, loader=open_rgb)
        self.skip_bad_images = skip_bad_images
        self._skipped = multiprocessing.Value("i", 0)

    @property
    def skipped(self) -> int:
        return self._skipped.value

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                image = self.loader(path)
            except DataError as e:
                if not self.skip_bad_images:
                    raise
                with self._skipped.get_lock():
                    self._skipped.value += 1
                log.warning("skipped unreadable image: %s", e)
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, target
        raise DataError(f"no readable image at all in {self.root}")


def _missing(name: str, root: Path, what: str) -> DataError:
    return DataError(
        f"{name} not found under {root}. Pass --download to fetch it ({what}), or put the files there "
        f"yourself, or point --data-root at the folder that holds them"
    )


def _torchvision(name: str, split: str, transform: Callable | None, root: Path, download: bool) -> Dataset:
    try:
        if name == "cifar10":
            return tv.CIFAR10(str(root), train=split != "val", transform=transform, download=download)
        if name == "stl10":
            stl_split = {"pretrain": "train+unlabeled", "train": "train", "val": "test"}[split]
            return tv.STL10(str(root), split=stl_split, transform=transform, download=download)
        return tv.Imagenette(
            str(root), split="val" if split == "val" else "train", size="320px", transform=transform,
            download=download, loader=open_rgb,
        )  # fmt: skip
    except RuntimeError as e:
        if "not found" in str(e).lower() or "corrupted" in str(e).lower():
            sizes = {"cifar10": "about 170 MB", "stl10": "about 2.6 GB", "imagenette": "about 330 MB"}
            raise _missing(name, root, sizes[name]) from None
        raise
    except OSError as e:  # a failed download: no network, disk full
        raise DataError(f"could not download {name} into {root}: {e}") from None


def make_dataset(
    data: str,
    split: str,
    transform: Callable | None,
    image_size: int = 32,
    root: str | os.PathLike | None = None,
    download: bool = False,
    skip_bad_images: bool = False,
) -> Dataset:
    """The named dataset's ``split``: "pretrain" (all images usable without labels), "train" or "val".

    Items are ``(image, label)``; the image is whatever ``transform`` makes of it.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if data == BUILTIN:
        return BuiltinShapes("test" if split == "val" else "train", builtin_source_size(image_size), transform)
    if data in NAMED:
        return _torchvision(data, split, transform, Path(root or default_data_root()).expanduser(), download)
    if not Path(data).expanduser().is_dir():
        raise DataError(f"dataset not found: {data!r} is neither one of {', '.join(NAMED)} nor an existing folder")
    return image_folder_split(data, split, lambda root: CheckedImageFolder(root, transform, skip_bad_images))


def image_folder_split(data: str, split: str, make: Callable[[str], Dataset]) -> Dataset:
    """``make(folder)`` for the ``split`` of an image-folder path: train/ for "pretrain" and "train",
    val/ (or test/) for "val", the folder itself when it has no such sub-folder."""
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise DataError(f"dataset not found: {data!r} is not an existing folder")
    names = ("train",) if split in ("pretrain", "train") else ("val", "test")
    chosen = next((folder / n for n in names if (folder / n).is_dir()), folder)
    try:
        return make(str(chosen))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{chosen} is not an image folder (one sub-folder of images per class): {e}") from None


def num_classes(dataset: Dataset) -> int:
    """How many classes a dataset's labels have."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    if classes is None:
        raise DataError(f"{type(dataset).__name__} does not say how many classes it has")
    return len(classes)


def skipped_images(dataset: Dataset) -> int:
    """Unreadable images skipped so far (0 for datasets that cannot skip)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "skipped", 0)
