"""The GPU data pipeline, run on the CPU: a small ImageFolder of JPEGs (and one PNG) made here.

The device code is the same on CPU and CUDA except the JPEG decoder (libjpeg-turbo here, nvjpeg
on a GPU), so these tests check everything but nvjpeg's pixels.
"""

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop, v2

from mae_course.data import gpu_pipeline as gpu_data
from mae_course.data.batched_crops import CropBoxes, crop_resize_flip, matmul_dtype, sample_crops, size_groups
from mae_course.data.batches import choose_pipeline
from mae_course.data.gpu_pipeline import (
    EncodedBatch,
    EncodedImageFolder,
    GpuPretrainTransform,
    collate_encoded,
    decode_on_cpu,
    device_batches,
    encoded_dataset,
    encoded_loader,
    is_jpeg,
)
from mae_course.data.image_files import open_rgb
from mae_course.data.transforms import IMAGENET_MEAN, IMAGENET_STD, pretrain_transform
from mae_course.errors import ConfigError, DataError
from tests.conftest import write_images

SIZES = {"wide.JPEG": (500, 375), "tall.JPEG": (375, 500), "square.JPEG": (333, 333)}  # (width, height)
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/{a,b}/: three JPEGs of ImageNet-like sizes and one PNG."""
    sizes = {f"{name}/{name}_{file}": size for name in ("a", "b") for file, size in SIZES.items()}
    return write_images(tmp_path_factory.mktemp("images"), {**sizes, "b/b_drawing.png": (300, 240)})


@pytest.fixture
def with_corrupt(folder, tmp_path):
    """A copy of ``folder`` plus a file of random bytes named like a JPEG."""
    root = tmp_path / "images"
    for path in folder.rglob("*.*"):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        (root / path.parent.name / path.name).write_bytes(path.read_bytes())
    bad = root / "a" / "a_broken.JPEG"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return root, str(bad)


def all_bytes(dataset):
    return [dataset[i][0] for i in range(len(dataset))], [dataset.path(i) for i in range(len(dataset))]


# ---------------------------------------------------------------------------------------- reading


def test_items_are_file_bytes_with_label_and_index(folder):
    dataset = EncodedImageFolder(folder)
    assert len(dataset) == 7 and dataset.classes == ["a", "b"]
    data, label, index = dataset[4]
    assert data.dtype == torch.uint8 and data.dim() == 1 and index == 4 and label == 1
    assert data.numel() == (folder / "b" / dataset.path(4).split("/")[-1]).stat().st_size

    batch = collate_encoded([dataset[i] for i in (0, 5, 6)])
    assert isinstance(batch, EncodedBatch) and len(batch.data) == 3
    assert batch.labels.tolist() == [0, 1, 1] and batch.indices.tolist() == [0, 5, 6]
    assert [d.numel() for d in batch.data] == [dataset[i][0].numel() for i in (0, 5, 6)]  # lengths differ


def test_a_loader_with_workers_yields_encoded_batches(folder):
    loader = encoded_loader(encoded_dataset(str(folder)), batch_size=4, num_workers=1)
    batches = list(loader)
    assert [len(b.data) for b in batches] == [4, 3]
    assert all(isinstance(b, EncodedBatch) for b in batches)


def test_batches_are_pinnable(folder, monkeypatch):
    """DataLoader(pin_memory=True) pins each tensor of a batch and keeps its type (faked here: no GPU)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *args, **kwargs: pinned.append(self) or self)
    dataset = EncodedImageFolder(folder)
    batch = pin_memory(collate_encoded([dataset[i] for i in range(3)]))
    assert isinstance(batch, EncodedBatch) and isinstance(batch.data, list) and len(pinned) == 3 + 2


def test_encoded_dataset_uses_the_train_split(folder, tmp_path):
    (tmp_path / "train").symlink_to(folder)
    assert len(encoded_dataset(str(tmp_path), "pretrain")) == 7
    with pytest.raises(DataError, match="not an existing folder"):
        encoded_dataset(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------- decoding


def test_output_shape_dtype_and_value_range(folder):
    data, paths = all_bytes(EncodedImageFolder(folder))
    images = GpuPretrainTransform(48)(data, "cpu", paths)
    assert images.shape == (7, 3, 48, 48) and images.dtype == torch.float32 and images.device.type == "cpu"
    pixels = images * STD + MEAN  # back to [0, 1]
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert pixels.std() > 0.1  # real pictures, not a constant


def test_the_png_decodes_through_the_cpu_fallback(folder, monkeypatch):
    png = folder / "b" / "b_drawing.png"
    dataset = EncodedImageFolder(folder)
    k = [dataset.path(i) for i in range(len(dataset))].index(str(png))
    data, _, _ = dataset[k]
    assert not is_jpeg(data) and is_jpeg(dataset[0][0])
    expected = v2.functional.pil_to_tensor(open_rgb(str(png)))
    assert torch.equal(decode_on_cpu(data), expected)

    fallback_calls = []
    monkeypatch.setattr(gpu_data, "decode_on_cpu", lambda d: fallback_calls.append(d) or decode_on_cpu(d))
    batch = [dataset[0][0], data, dataset[1][0]]  # in a batch with JPEGs: order kept
    images, kept = GpuPretrainTransform(32).decode(batch, "cpu")
    assert len(fallback_calls) == 1 and fallback_calls[0] is data  # the JPEGs went through decode_jpeg
    assert kept == [0, 1, 2] and torch.equal(images[1], expected)
    for image, i in ((images[0], 0), (images[2], 1)):
        width, height = Image.open(dataset.path(i)).size
        assert image.shape == (3, height, width) and image.dtype == torch.uint8


def test_a_corrupt_file_is_an_error_naming_it(with_corrupt):
    root, bad = with_corrupt
    data, paths = all_bytes(EncodedImageFolder(root))
    with pytest.raises(DataError, match="a_broken.JPEG") as info:
        GpuPretrainTransform(32)(data, "cpu", paths)
    assert bad in str(info.value) and "--skip-bad-images" in str(info.value)


def test_skipping_drops_counts_and_names_the_bad_file(with_corrupt, caplog):
    root, bad = with_corrupt
    dataset = EncodedImageFolder(root)
    data, paths = all_bytes(dataset)
    transform = GpuPretrainTransform(32, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="mae_course.data.gpu_pipeline"):
        first = transform(data, "cpu", paths)
        second = transform(data, "cpu", paths)
    assert first.shape == second.shape == (len(dataset) - 1, 3, 32, 32)
    assert transform.skipped == 1 and transform.bad_files == [bad]  # met twice: counted once, warned once
    warnings = [r.getMessage() for r in caplog.records if "skipped undecodable image" in r.getMessage()]
    assert len(warnings) == 1 and bad in warnings[0]


def test_a_truncated_jpeg_in_a_batch_is_found_by_halving_then_left_out(folder, monkeypatch):
    """A bad file fails the whole batched call. It used to cost one decode call per image of the batch;
    halving the failed call finds it in about 2 log2(N) calls, once: later batches leave it out."""
    good = EncodedImageFolder(folder)[0][0]
    truncated = good[: good.numel() // 2].clone()  # still starts like a JPEG: fails the batched call
    assert is_jpeg(truncated)
    batch = [good] * 31 + [truncated]
    names = [f"ok{k}.JPEG" for k in range(31)] + ["cut.JPEG"]
    with pytest.raises(DataError, match="cut.JPEG"):
        GpuPretrainTransform(32).decode(batch, "cpu", names)

    calls = []
    real = gpu_data.decode_jpeg
    monkeypatch.setattr(gpu_data, "decode_jpeg", lambda data, **kw: calls.append(len(data)) or real(data, **kw))
    transform = GpuPretrainTransform(32, skip_bad_images=True)
    images, kept = transform.decode(batch, "cpu", names)
    assert kept == list(range(31)) and len(images) == 31 and transform.bad_files == ["cut.JPEG"]
    assert calls[0] == 32 and len(calls) == 1 + 2 * 5  # 32 -> 16 + 16 -> 8 + 8 -> ... -> 1 + 1
    calls.clear()
    images, kept = transform.decode(batch, "cpu", names)
    assert calls == [31] and kept == list(range(31))  # known bad: not decoded again
    with pytest.raises(DataError, match="no image of a batch"):  # never an empty batch
        transform.decode([truncated], "cpu", ["cut.JPEG"])


def test_device_batches_keep_the_labels_of_the_kept_images(with_corrupt):
    root, bad = with_corrupt
    dataset = EncodedImageFolder(root, skip_bad_images=True)
    transform = GpuPretrainTransform(32, skip_bad_images=True)
    seen = list(device_batches(encoded_loader(dataset, batch_size=8), transform, "cpu"))
    ((images, labels),) = seen
    good_labels = [label for path, label in dataset.samples if path != bad]
    assert images.shape == (7, 3, 32, 32) and labels.tolist() == good_labels and transform.skipped == 1


# ---------------------------------------------------------------------------------------- augmenting


def square_crop_mean_area(low: float = 0.2, ratio: float = 4 / 3) -> float:
    """The expected crop area fraction on a square image, ignoring rounding to whole pixels.

    get_params draws s ~ U(low, 1) and u = log r ~ U(-L, L), L = log(ratio), and keeps the box iff it
    fits: s * exp(|u|) <= 1 (else it draws again; 10 failures, with odds ~1e-8, give the whole
    image). So E[s | kept] = int_0^L (exp(-2u) - low^2) / 2 du / int_0^L (exp(-u) - low) du: 0.538,
    not the naive 0.6: large crops of unequal sides do not fit and are redrawn."""
    L = math.log(ratio)
    return ((1 - math.exp(-2 * L)) / 4 - low**2 * L / 2) / (1 - math.exp(-L) - low * L)


def sampled(sizes, draws, seed=1, **settings):
    """``draws`` crop boxes for each (height, width) of ``sizes``, as plain tuples per size."""
    boxes = sample_crops(
        torch.tensor([size for size in sizes for _ in range(draws)]),
        generator=torch.Generator().manual_seed(seed),
        **settings,
    )
    rows = list(zip(*(t.tolist() for t in boxes), strict=True))
    return [rows[k * draws : (k + 1) * draws] for k in range(len(sizes))]


def test_crop_boxes_follow_torchvision_sampler():
    """Drawn for the whole batch at once, the boxes keep RandomResizedCrop.get_params's distribution:
    area fractions in [0.2, 1], aspect ratios in [3/4, 4/3] (up to rounding to whole pixels), the
    mean area and the mean log aspect ratio of torchvision's get_params drawn directly, within 5
    standard errors of the difference (and, for a square, the value worked out by hand), and half
    of the images flipped."""
    draws = 3000
    shapes = [(height, width) for width, height in [*SIZES.values(), (600, 150)]]
    for (height, width), boxes in zip(shapes, sampled(shapes, draws), strict=True):
        area = torch.tensor([h * w / (height * width) for _, _, h, w, _ in boxes])
        log_ratio = torch.tensor([math.log(w / h) for _, _, h, w, _ in boxes])
        smallest_side = min(min(h, w) for _, _, h, w, _ in boxes)
        slack = 1 / smallest_side  # rounding each side to a whole pixel moves the area by < 1/side
        assert area.min() >= 0.2 * (1 - slack) and area.max() <= 1.0
        assert all(0 <= top <= height - h and 0 <= left <= width - w for top, left, h, w, _ in boxes)
        for _, _, h, w, _ in boxes:  # the unrounded ratio lies in [(w - .5) / (h + .5), (w + .5) / (h - .5)]
            assert (w - 0.5) / (h + 0.5) <= 4 / 3 and (w + 0.5) / (h - 0.5) >= 3 / 4

        torch.manual_seed(2)
        shape = torch.empty((), dtype=torch.uint8).expand(3, height, width)  # only the shape is read
        direct = [RandomResizedCrop.get_params(shape, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(draws)]
        for ours, theirs in (
            (area, torch.tensor([h * w / (height * width) for _, _, h, w in direct])),
            (log_ratio, torch.tensor([math.log(w / h) for _, _, h, w in direct])),
            (
                torch.tensor([top / max(1, height - h) for top, _, h, _, _ in boxes]),  # where the box sits
                torch.tensor([top / max(1, height - h) for top, _, h, _ in direct]),
            ),
        ):
            se = math.sqrt(ours.var() / draws + theirs.var() / draws)
            assert abs(ours.mean() - theirs.mean()) < 5 * se, (width, height, ours.mean(), theirs.mean())
        if width == height:  # from first principles, see square_crop_mean_area
            assert abs(area.mean() - square_crop_mean_area()) < 5 * math.sqrt(area.var() / draws)
        flips = torch.tensor([flip for *_, flip in boxes], dtype=torch.float)
        assert abs(flips.mean() - 0.5) < 5 * math.sqrt(0.25 / draws)


def test_a_box_that_never_fits_falls_back_to_the_central_crop_as_torchvision():
    """A 10 x 1000 strip: no box of area >= 20% with a ratio <= 4/3 fits, so get_params's fallback, the
    central box with the ratio clamped to 4/3 (13 x 10), every time."""
    (boxes,) = sampled([(10, 1000)], 50)
    assert set(boxes) == {(0, (1000 - 13) // 2, 10, 13, False), (0, (1000 - 13) // 2, 10, 13, True)}
    shape = torch.empty((), dtype=torch.uint8).expand(3, 10, 1000)
    assert RandomResizedCrop.get_params(shape, [0.2, 1.0], [3 / 4, 4 / 3]) == (0, (1000 - 13) // 2, 10, 13)
    assert sampled([(1000, 10)], 1, flip_p=0.0) == [[((1000 - 13) // 2, 0, 13, 10, False)]]


def per_image_reference(images, boxes, size, interpolation=InterpolationMode.BICUBIC, uint8=False):
    """The per-image loop the batched code replaces: one torchvision resized_crop (and flip) per image,
    on float32 pixels as torchvision runs it on a GPU, or on the uint8 tensor as the CPU pipeline does."""
    out = []
    for k, image in enumerate(images):
        image = image if uint8 else image.float()
        top, left, h, w = (int(t[k]) for t in boxes[:4])
        crop = v2.functional.resized_crop(image, top, left, h, w, [size, size], interpolation, antialias=True)
        out.append((v2.functional.horizontal_flip(crop) if boxes.flip[k] else crop).float().round().clamp(0, 255))
    return torch.stack(out)


@pytest.mark.parametrize(
    "interpolation, dtype, differ",
    [("bicubic", torch.float32, 0.01), ("bilinear", torch.float32, 0.01), ("bicubic", torch.float16, 0.1)],
)
def test_the_batched_crop_equals_torchvision_image_by_image(folder, interpolation, dtype, differ):
    """Two matrix products per batch give torchvision's antialiased resized_crop of each uint8 image (the
    CPU pipeline): both passes end in whole grey levels clipped to 0-255, as a uint8 image does, but
    torchvision's integer weights round a little differently, now and then by one level after the first
    pass, which the second can stretch to two when enlarging. Tolerance: at most 2 grey levels, on under
    1% of the pixels in float32 (measured: 1 level when shrinking, 2 when enlarging, on 0.3-0.5%); in
    float16, as on a GPU, whose sums are rounded to float16 between the passes, under 10% (measured:
    6-8%), still by at most 2. On float pixels, as torchvision resizes on a GPU, bicubic's overshoot at
    hard edges is not clipped between the passes: the same but at edges (measured: 0.08-0.18 levels on
    average). For every crop, flip, shrink and enlargement drawn, and whether the batch is padded into
    one tensor or into groups."""
    data, _ = all_bytes(EncodedImageFolder(folder))
    images = [decode_on_cpu(d) for d in data] * 2
    boxes = sample_crops(
        torch.tensor([tuple(i.shape[-2:]) for i in images]), generator=torch.Generator().manual_seed(3)
    )
    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[interpolation]
    for size in (40, 224, 600):  # shrink, about even, enlarge
        batched = crop_resize_flip(images, boxes, size, interpolation, dtype=dtype)
        assert batched.shape == (len(images), 3, size, size) and batched.dtype == torch.float32
        on_uint8 = per_image_reference(images, boxes, size, mode, uint8=True)
        assert (batched - on_uint8).abs().max() <= 2 and (batched != on_uint8).float().mean() < differ
        on_floats = per_image_reference(images, boxes, size, mode)
        assert (batched - on_floats).abs().mean() < 0.3
        grouped = crop_resize_flip(images, boxes, size, interpolation, max_elements=3 * 500 * 500, dtype=dtype)
        # padding to another size sums the same products in another order: a half level may round apart
        assert (grouped - batched).abs().max() <= 1 and (grouped != batched).float().mean() < differ / 10


def test_the_resampling_runs_in_float16_on_gpus_only():
    assert matmul_dtype(torch.device("cuda")) == torch.float16 and matmul_dtype(torch.device("cpu")) == torch.float32


def test_size_groups_bound_the_padded_batch():
    sizes = [(375, 500), (500, 375), (256, 341), (2000, 3000), (256, 256)]
    assert size_groups(sizes) == [[4, 2, 0, 3, 1]]  # one tensor for a usual batch: landscape first, by area
    groups = size_groups(sizes, max_elements=3 * 600 * 600)
    assert sorted(k for g in groups for k in g) == list(range(5))
    for group in groups:
        height, width = max(sizes[k][0] for k in group), max(sizes[k][1] for k in group)
        assert len(group) == 1 or len(group) * 3 * height * width <= 3 * 600 * 600


def test_a_generator_makes_it_reproducible_and_leaves_the_global_one(folder):
    data, paths = all_bytes(EncodedImageFolder(folder))
    transform = GpuPretrainTransform(32)
    state = torch.get_rng_state()
    a = transform(data, "cpu", paths, generator=torch.Generator().manual_seed(5))
    b = transform(data, "cpu", paths, generator=torch.Generator().manual_seed(5))
    c = transform(data, "cpu", paths, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_for_the_same_box_the_pixels_of_the_cpu_pipeline(folder):
    """The GPU path normalizes like the CPU pipeline (the same /255 and ImageNet constants): with the crop
    of the whole image and no flip, its output is pretrain_transform's to one grey level."""
    size = 64
    reference = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    transform = GpuPretrainTransform(size)
    dataset = EncodedImageFolder(folder)
    tolerance = 1 / 255 / min(IMAGENET_STD) + 1e-6
    for i in range(len(dataset)):
        image = decode_on_cpu(dataset[i][0])
        h, w = image.shape[-2:]
        whole = CropBoxes(*(torch.tensor([v]) for v in (0, 0, h, w)), torch.tensor([False]))
        got = transform.apply([image], whole)[0]
        assert (got - reference(open_rgb(dataset.path(i)))).abs().max() <= tolerance


def test_same_distribution_as_the_cpu_pipeline(folder):
    """Per-channel mean, std and sharpness of many augmented images, GPU path vs CPU path (other seeds).

    Each statistic is averaged over ``rounds`` augmentations of every image in both paths; the
    difference of the two averages has a standard error we estimate from the samples (pooled over
    images, which overestimates it: a conservative test). We allow 5 of them. The sharpness (mean
    horizontal difference) is what makes the test see the crop scale: a (0.08, 1) range fails it."""
    size, rounds = 32, 100
    dataset = EncodedImageFolder(folder)
    data, paths = all_bytes(dataset)
    pictures = [open_rgb(p) for p in paths]
    reference = pretrain_transform(size)
    transform = GpuPretrainTransform(size)

    torch.manual_seed(0)
    cpu = torch.stack([reference(img) for _ in range(rounds) for img in pictures])
    gen = torch.Generator().manual_seed(12345)
    gpu = torch.cat([transform(data, "cpu", paths, generator=gen) for _ in range(rounds)])
    assert cpu.shape == gpu.shape

    def sharpness(x):  # mean |horizontal difference|: smaller crops are magnified, hence smoother
        return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(2, 3))

    for stat in (lambda x: x.mean(dim=(2, 3)), lambda x: x.std(dim=(2, 3)), sharpness):
        a, b = stat(cpu), stat(gpu)  # (samples, 3)
        se = (a.var(dim=0) / len(a) + b.var(dim=0) / len(b)).sqrt()
        assert ((a.mean(dim=0) - b.mean(dim=0)).abs() < 5 * se).all(), (a.mean(0), b.mean(0), se)


def test_bilinear_is_an_option_and_bad_settings_are_config_errors(folder):
    data, _ = all_bytes(EncodedImageFolder(folder))
    torch.manual_seed(0)
    bicubic = GpuPretrainTransform(32)(data[:2], "cpu")
    torch.manual_seed(0)
    bilinear = GpuPretrainTransform(32, interpolation="bilinear")(data[:2], "cpu")
    assert bilinear.shape == bicubic.shape and not torch.equal(bilinear, bicubic)
    assert (bilinear - bicubic).abs().mean() < 0.1  # the same crops, a slightly different kernel
    for bad in (dict(interpolation="nearest"), dict(scale=(0.5, 0.2)), dict(flip_p=2.0), dict(size=0)):
        with pytest.raises(ConfigError):
            GpuPretrainTransform(**{"size": 32, **bad})


# ---------------------------------------------------------------------------------------- choosing


def test_choose_pipeline(folder):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert choose_pipeline("auto", cuda, str(folder)) == "gpu"
    assert choose_pipeline("auto", "cuda:1", str(folder)) == "gpu"
    assert choose_pipeline("auto", cpu, str(folder)) == "cpu"
    assert choose_pipeline("auto", cuda, "cifar10") == "cpu"
    assert choose_pipeline("auto", cuda, str(folder), augment="crop+jitter") == "cpu"
    assert choose_pipeline("cpu", cuda, str(folder)) == "cpu"
    assert choose_pipeline("gpu", cpu, str(folder)) == "gpu"
    with pytest.raises(ConfigError, match="not an ImageFolder"):
        choose_pipeline("gpu", cuda, "builtin")
    with pytest.raises(ConfigError, match="only the 'crop'"):
        choose_pipeline("gpu", cuda, str(folder), augment="none")
    with pytest.raises(ConfigError, match="unknown data pipeline"):
        choose_pipeline("fast", cuda, str(folder))
