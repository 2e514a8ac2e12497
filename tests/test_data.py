import time

import pytest
import torch

from mae_course.data import CLASSES, BuiltinShapes, list_photos, load_image, load_photo, photo_dir, render_shapes
from mae_course.data import builtin as shapes_module
from mae_course.errors import DataError


def test_render_is_deterministic_and_seeded():
    labels = torch.arange(40) % 10
    a = render_shapes(labels, 32, torch.Generator().manual_seed(5))
    b = render_shapes(labels, 32, torch.Generator().manual_seed(5))
    c = render_shapes(labels, 32, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == (40, 3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_splits_are_fixed_balanced_and_disjoint():
    train, test = BuiltinShapes("train", 32), BuiltinShapes("test", 32)
    assert len(CLASSES) >= 10
    assert len(train) == 10_000 and len(test) == 2_000
    assert train.labels.bincount().tolist() == [1000] * 10
    assert test.labels.bincount().tolist() == [200] * 10
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert isinstance(label, int)
    # no test image is a copy of a training image
    train_keys = {bytes(x.numpy()) for x in train.images[:2000]}
    assert not any(bytes(x.numpy()) in train_keys for x in test.images)


def test_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("MAE_COURSE_CACHE", str(tmp_path))
    imgs, labels = shapes_module.load_split("test", 32)
    assert (tmp_path / f"builtin-shapes-v{shapes_module.VERSION}-32px-test.pt").exists()
    start = time.perf_counter()
    again, _ = shapes_module.load_split("test", 32)
    assert time.perf_counter() - start < 0.3  # read back, not re-rendered
    assert torch.equal(again, imgs)


def test_corrupt_cache_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setenv("MAE_COURSE_CACHE", str(tmp_path))
    path = tmp_path / f"builtin-shapes-v{shapes_module.VERSION}-32px-test.pt"
    path.write_bytes(b"garbage")
    imgs, labels = shapes_module.load_split("test", 32)
    assert imgs.shape == (2000, 3, 32, 32) and labels.shape == (2000,)


def test_bad_split_and_size():
    with pytest.raises(ValueError, match="unknown split"):
        shapes_module.make_split("validation", 32)
    with pytest.raises(ValueError, match="sizes"):
        shapes_module.make_split("test", 48)


def test_colour_alone_does_not_give_the_class_away():
    """A nearest-centroid classifier on each image's mean colour and colour spread stays
    near chance (10%), so the label must come from the shape's form."""
    train, test = BuiltinShapes("train", 32), BuiltinShapes("test", 32)

    def colour_features(images):
        x = images.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    ftr, fte = colour_features(train.images), colour_features(test.images)
    mu, sd = ftr.mean(0), ftr.std(0)
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    centroids = torch.stack([ftr[train.labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(fte, centroids).argmin(1) == test.labels).float().mean().item()
    assert accuracy < 0.2


def test_shape_masks_are_what_carries_the_class():
    """The same random draws with two different labels differ only where the shape is."""
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    disk = render_shapes(torch.tensor([0]), 32, g1)
    ring = render_shapes(torch.tensor([1]), 32, g2)
    differs = (disk[0].int() - ring[0].int()).abs().sum(0) > 0  # (32, 32): the ring's hole and rim
    assert 4 < differs.sum() < 32 * 32 / 2


def test_photos():
    assert list_photos() == ["astronaut", "chelsea", "coffee", "rocket"]
    assert (photo_dir() / "CREDITS.md").exists()
    img = load_photo("chelsea")
    assert img.shape == (3, 224, 224) and 0 <= img.min() and img.max() <= 1
    assert load_photo("coffee", size=64).shape == (3, 64, 64)
    with pytest.raises(DataError, match="no shipped photo 'dog'"):
        load_photo("dog")


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="cannot read .*bad.jpg"):
        load_image(bad)
