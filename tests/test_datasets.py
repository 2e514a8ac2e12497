"""Real datasets, offline: fake CIFAR-format batches and a fake ImageFolder of JPEGs made here."""

import logging
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import datasets as tv

from mae_course.data.datasets import CheckedImageFolder, make_dataset, num_classes, skipped_images
from mae_course.data.transforms import eval_transform, pretrain_transform
from mae_course.errors import DataError
from tests.conftest import folder_layout, key_words, write_images


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
    write_images(tmp_path, folder_layout())
    train = make_dataset(str(tmp_path), "train", pretrain_transform(16))
    val = make_dataset(str(tmp_path), "val", eval_transform(16))
    assert len(train) == len(val) == 12 and num_classes(train) == 2
    assert train[0][0].shape == (3, 16, 16)
    flat = make_dataset(str(tmp_path / "train"), "pretrain", None)  # a folder of class folders, no splits
    assert len(flat) == 12 and make_dataset(str(tmp_path), "pretrain", None).root == str(tmp_path / "train")


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_classifier_is_never_measured_on_its_own_training_images(tmp_path, split):
    """A folder without val/ (or without train/) used to be evaluated on itself: a silent wrong result."""
    write_images(tmp_path, folder_layout())
    with pytest.raises(DataError, match=key_words("train", "no train/ and val/")):
        make_dataset(str(tmp_path / "train"), split, None)
    (tmp_path / "train").rename(tmp_path / "other")
    with pytest.raises(
        DataError, match="has no train/ folder"
    ):  # val/ alone: train/ would be the folder with val/ in it
        make_dataset(str(tmp_path), split, None)


def test_not_an_image_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is not an image folder"):
        make_dataset(str(tmp_path / "empty"), "pretrain", None)
    with pytest.raises(DataError, match=key_words("builtin, cifar10, stl10, imagenette", "folder")):
        make_dataset(str(tmp_path / "nope"), "train", None)


def test_a_corrupt_image_is_named(tmp_path):
    write_images(tmp_path, folder_layout())
    bad = tmp_path / "train" / "dog" / "dog_3.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    dataset = make_dataset(str(tmp_path), "train", None)
    index = [i for i, (path, _) in enumerate(dataset.samples) if path.endswith("dog/dog_3.jpg")][0]
    with pytest.raises(DataError, match=r"cannot read image .*dog/dog_3\.jpg"):
        dataset[index]


def test_a_truncated_image_is_named(tmp_path):
    write_images(tmp_path, folder_layout(size=(64, 64)))
    good = (tmp_path / "train" / "cat" / "cat_2.jpg").read_bytes()
    (tmp_path / "train" / "cat" / "cat_2.jpg").write_bytes(good[: len(good) // 2])
    dataset = make_dataset(str(tmp_path), "train", None)
    with pytest.raises(DataError, match=r"cannot read image .*cat/cat_2\.jpg"):
        [dataset[i] for i in range(len(dataset))]


def test_skipping_bad_images_counts_and_reports_them(tmp_path, caplog):
    write_images(tmp_path, folder_layout())
    for name in ("cat/cat_1.jpg", "dog/dog_4.jpg"):
        (tmp_path / "train" / name).write_bytes(b"garbage")
    dataset = make_dataset(str(tmp_path), "train", eval_transform(16), skip_bad_images=True)
    assert isinstance(dataset, CheckedImageFolder)
    with caplog.at_level(logging.WARNING, logger="mae_course.datasets"):
        images = [dataset[i][0] for i in range(len(dataset))]
    assert len(images) == 12 and all(img.shape == (3, 16, 16) for img in images)  # batches stay full
    assert skipped_images(dataset) == 2
    assert sum("skipped unreadable image" in r.message for r in caplog.records) == 2


def test_skips_are_counted_across_loader_workers(tmp_path):
    write_images(tmp_path, folder_layout())
    (tmp_path / "train" / "cat" / "cat_0.jpg").write_bytes(b"garbage")
    dataset = make_dataset(str(tmp_path), "train", eval_transform(16), skip_bad_images=True)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert sum(len(b[0]) for b in batches) == 12
    assert skipped_images(dataset) == 1
