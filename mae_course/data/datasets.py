"""Lessons 05-09: a dataset by name or by path.

    builtin      the generated shapes (no download), 10 classes, 32 or 64 px
    cifar10      CIFAR-10 through torchvision (60k 32x32 images, 10 classes, ~170 MB)
    stl10        STL-10 through torchvision (5k labelled + 100k unlabelled 96x96 images, ~2.6 GB)
    imagenette   Imagenette through torchvision (10 easy ImageNet classes, the 320 px version, ~330 MB)
    PATH         a folder of class sub-folders of images. For pretraining, its train/ (when it
                 has one) or the folder itself. For classification it needs train/ and val/ (or
                 test/), ImageNet-1K's layout, with the same classes: never is a classifier
                 evaluated on its own training images.

Real datasets live under ``--data-root`` (default ``~/.cache/mae_course/datasets``) and are
downloaded there only when asked (``--download``). A missing dataset is one clear message
saying where to put it or how to get it. An unreadable image file is an error that names the
file, or, with ``skip_bad_images``, is skipped, counted once however often it is met, and logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv
from torchvision.datasets import ImageFolder

from ..errors import DataError
from .builtin import BuiltinShapes, cache_dir
from .image_files import open_rgb

BUILTIN = "builtin"
NAMED = ("builtin", "cifar10", "stl10", "imagenette")
SPLITS = ("pretrain", "train", "val")
NATIVE_SIZE = {BUILTIN: 64, "cifar10": 32}  # datasets evaluated at their own size, without the 256/224 crop

log = logging.getLogger(__name__)


def default_data_root() -> Path:
    return Path(os.environ.get("MAE_COURSE_DATA", cache_dir() / "datasets"))


def cpu_cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_processes() -> int:
    """Processes sharing this machine's cores: torchrun's LOCAL_WORLD_SIZE (1 when run plainly)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def loader_workers(data: str, requested: int | None = None, announce: bool = True, processes: int | None = None) -> int:
    """DataLoader workers of this process: its share of the CPU cores is ``cpu_cores() // processes``
    (``processes`` on this machine, by default :func:`local_processes`: torchrun's 8 processes on a
    64-core node get 8 cores each). ``requested`` is capped at that share (more only cost memory);
    by default none for the in-memory built-in data, else one per spare core of the share, at most 8."""
    processes = processes or local_processes()
    share = max(1, cpu_cores() // processes)
    if requested is None:
        return 0 if data == BUILTIN else max(1, min(8, share - 1))
    if requested > share:
        if announce:
            cores = f"the {cpu_cores()} CPU cores here"
            if processes > 1:
                cores = f"this process's share of the CPU cores ({cpu_cores()} cores / {processes} processes)"
            print(f"note: --num-workers {requested} is more than {cores}; using {share}")
        return share
    return requested


def builtin_source_size(image_size: int) -> int:
    """The built-in data is rendered at 32 or 64 px; use the smallest that covers ``image_size``."""
    return 32 if image_size <= 32 else 64


def is_image_folder(data: str) -> bool:
    """Whether ``data`` (a ``--data`` value) is a folder of images rather than a named dataset."""
    return data not in NAMED and Path(data).expanduser().is_dir()


def eval_crop_fraction(data: str, image_size: int) -> float:
    """Evaluation's center crop: the whole image for data already at (or below) its native size,
    else the usual 224/256 of the resized image."""
    native = NATIVE_SIZE.get(data)
    return 1.0 if native is not None and image_size <= native else 224 / 256


class CheckedImageFolder(ImageFolder):
    """An ImageFolder that names any unreadable file, or skips it and counts the skip.

    With ``skip_bad_images``, an unreadable file is replaced by the next readable one (so the
    batch stays full) and logged. ``skipped`` counts distinct bad files, across DataLoader
    workers and epochs: a flag per file in shared memory.
    """

    def __init__(self, root: str, transform: Callable | None = None, skip_bad_images: bool = False):
        super().__init__(root, transform=transform, loader=open_rgb)
        self.skip_bad_images = skip_bad_images
        self._bad = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    @property
    def skipped(self) -> int:
        return int(self._bad.sum())

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            position = (index + offset) % len(self.samples)
            path, target = self.samples[position]
            try:
                image = self.loader(path)
            except DataError as e:
                if not self.skip_bad_images:
                    raise
                if not self._bad[position]:
                    self._bad[position] = True
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
            str(root),
            split="val" if split == "val" else "train",
            size="320px",
            transform=transform,
            download=download,
            loader=open_rgb,
        )
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
    return image_folder_split(data, split, lambda folder: CheckedImageFolder(folder, transform, skip_bad_images))


def split_folder(data: str, split: str) -> Path:
    """Which folder of an image-folder path holds ``split``.

    "pretrain": train/ when there is one, else the folder itself (labels are not used).
    "train" and "val": train/, and val/ (or test/); a folder without both is refused, rather
    than evaluating a classifier on its own training images.
    """
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise DataError(f"dataset not found: {data!r} is not an existing folder")
    train = folder / "train"
    if split == "pretrain":
        return train if train.is_dir() else folder
    val = next((folder / n for n in ("val", "test") if (folder / n).is_dir()), None)
    if not train.is_dir() or val is None:
        missing = " and ".join(name for name, there in (("train/", train.is_dir()), ("val/", val)) if not there)
        raise DataError(
            f"{folder} has no {missing} folder: a classifier trains on train/ and is measured on val/ (or test/), "
            "each with one sub-folder per class, as ImageNet is laid out"
        )
    return train if split == "train" else val


def image_folder_split(data: str, split: str, make: Callable[[str], Dataset]) -> Dataset:
    """``make(folder)`` for the folder that holds ``split`` (see :func:`split_folder`)."""
    chosen = split_folder(data, split)
    try:
        return make(str(chosen))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{chosen} is not an image folder (one sub-folder of images per class): {e}") from None


def _base(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def class_names(dataset: Dataset) -> list[str]:
    """A dataset's class names, in label order."""
    classes = getattr(_base(dataset), "classes", None)
    if classes is None:
        raise DataError(f"{type(_base(dataset)).__name__} does not say which classes it has")
    return list(classes)


def num_classes(dataset: Dataset) -> int:
    """How many classes a dataset's labels have."""
    return len(class_names(dataset))


def check_classification_splits(train: Dataset, val: Dataset, data: str) -> int:
    """The number of classes; refuses a single class (every prediction would be right) and
    a validation split whose classes are not the training split's (its labels would mean others)."""
    names, val_names = class_names(train), class_names(val)
    if len(names) < 2:
        raise DataError(
            f"{data} has {len(names)} class ({', '.join(names) or 'none'}): a classifier needs at least two, "
            "or every prediction is trivially right"
        )
    if names != val_names:
        only_train = sorted(set(names) - set(val_names))[:4]
        only_val = sorted(set(val_names) - set(names))[:4]
        raise DataError(
            f"the training and validation classes of {data} differ (only in train: {only_train or 'none'}; "
            f"only in val: {only_val or 'none'}); give both splits the same class folders"
        )
    return len(names)


def skipped_images(dataset: Dataset) -> int:
    """Distinct unreadable images skipped so far (0 for datasets that cannot skip)."""
    return getattr(_base(dataset), "skipped", 0)
