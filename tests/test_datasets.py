"""Real datasets, offline: fake CIFAR-format batches and a fake ImageFolder of JPEGs made here."""

import logging
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets as tv

from mae_course.datasets import CheckedImageFolder, make_dataset, num_classes, skipped_images
from mae_course.errors import DataError
from mae_course.transforms import eval_transform, pretrain_transform


def fake_cifar(root, per_batch=20, test=30):
    """The CIFAR-10 python format: five training batches, a test batch and the label names."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(test)))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


@pytest.fixture
def cifar_files_only(monkeypatch):
    """torchvision checks the real files' md5 sums; fake files are only checked for existence."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))


def fake_image_folder(root, classes=("cat", "dog"), per_class=6, size=(40, 30)):
    for split in ("train", "val"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", size, (40 * i % 255, 90 * index, 30)).save(folder / f"{i}.jpg", quality=90)


def test_cifar_format_batches_load_through_torchvision(tmp_path, cifar_files_only):
    fake_cifar(tmp_path)
    train = make_dataset("cifar10", "train", pretrain_transform(32), root=tmp_path)
    val = make_dataset("cifar10", "val", eval_transform(32, crop_fraction=1.0), root=tmp_path)
    assert len(train) == 100 and len(val) == 30 and num_classes(train) == 10
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    assert isinstance(tv.CIFAR10, type) and isinstance(train, tv.CIFAR10)


@pytest.mark.parametrize("name", ["cifar10", "stl10", "imagenette"])
def test_a_missing_dataset_says_where_and_how(tmp_path, name):
    with pytest.raises(DataError, match=rf"{name} not found under {tmp_path}.*--download.*--data-root"):
        make_dataset(name, "train", None, root=tmp_path)


def test_a_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv.CIFAR10, "download", offline)
    with pytest.raises(DataError, match="could not download cifar10 .*no network"):
        make_dataset("cifar10", "train", None, root=tmp_path, download=True)


def test_image_folder_splits_and_classes(tmp_path):
    fake_image_folder(tmp_path)
    train = make_dataset(str(tmp_path), "train", pretrain_transform(16))
    val = make_dataset(str(tmp_path), "val", eval_transform(16))
    assert len(train) == len(val) == 12 and num_classes(train) == 2
    assert train[0][0].shape == (3, 16, 16)
    flat = make_dataset(str(tmp_path / "train"), "val", None)  # a folder of class folders, no splits
    assert len(flat) == 12


def test_not_an_image_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is not an image folder"):
        make_dataset(str(tmp_path / "empty"), "train", None)
    with pytest.raises(DataError, match="neither one of builtin, cifar10, stl10, imagenette nor an existing folder"):
        make_dataset(str(tmp_path / "nope"), "train", None)


def test_a_corrupt_image_is_named(tmp_path):
    fake_image_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "3.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    dataset = make_dataset(str(tmp_path), "train", None)
    index = [i for i, (path, _) in enumerate(dataset.samples) if path.endswith("dog/3.jpg")][0]
    with pytest.raises(DataError, match=r"cannot read image .*dog/3\.jpg"):
        dataset[index]


def test_a_truncated_image_is_named(tmp_path):
    fake_image_folder(tmp_path, size=(64, 64))
    good = (tmp_path / "train" / "cat" / "2.jpg").read_bytes()
    (tmp_path / "train" / "cat" / "2.jpg").write_bytes(good[: len(good) // 2])
    dataset = make_dataset(str(tmp_path), "train", None)
    with pytest.raises(DataError, match=r"cannot read image .*cat/2\.jpg"):
        [dataset[i] for i in range(len(dataset))]


def test_skipping_bad_images_counts_and_reports_them(tmp_path, caplog):
    fake_image_folder(tmp_path)
    for name in ("cat/1.jpg", "dog/4.jpg"):
        (tmp_path / "train" / name).write_bytes(b"garbage")
    dataset = make_dataset(str(tmp_path), "train", eval_transform(16), skip_bad_images=True)
    assert isinstance(dataset, CheckedImageFolder)
    with caplog.at_level(logging.WARNING, logger="mae_course.datasets"):
        images = [dataset[i][0] for i in range(len(dataset))]
    assert len(images) == 12 and all(img.shape == (3, 16, 16) for img in images)  # batches stay full
    assert skipped_images(dataset) == 2
    assert sum("skipped unreadable image" in r.message for r in caplog.records) == 2


def test_skips_are_counted_across_loader_workers(tmp_path):
    fake_image_folder(tmp_path)
    (tmp_path / "train" / "cat" / "0.jpg").write_bytes(b"garbage")
    dataset = make_dataset(str(tmp_path), "train", eval_transform(16), skip_bad_images=True)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert sum(len(b[0]) for b in batches) == 12
    assert skipped_images(dataset) == 1
