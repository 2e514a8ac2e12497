"""The pretrainer through either data pipeline: same images, same losses (on the CPU)."""

import json
import logging
from pathlib import Path

import pytest

from mae_course.data.jpeg_folder import make_jpeg_folder
from mae_course.errors import DataError
from mae_course.train.pretrain import PretrainConfig, pretrain


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return make_jpeg_folder(tmp_path_factory.mktemp("jpegs") / "imagenet", images=24, classes=3)


def run(root: Path, out: Path, pipeline: str, overrides: dict, **kw) -> list[float]:
    cfg = PretrainConfig(data=str(root), output_dir=str(out), data_pipeline=pipeline, image_size=32,
                         model="mae_vit_mini_patch4_32", model_overrides=overrides, batch_size=8, epochs=1,
                         num_workers=0, log_every=1, vis_images=0, device="cpu", **kw)  # fmt: skip
    pretrain(cfg)
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "step" in r]


def test_the_generated_folder_looks_like_imagenet(jpegs):
    files = sorted((jpegs / "train").glob("*/*.JPEG"))
    assert len(files) == 24 and len({f.parent.name for f in files}) == 3
    from PIL import Image

    sizes = [Image.open(f).size for f in files]
    assert all(400 <= max(s) <= 600 and abs(min(s) / max(s) - 0.75) < 0.01 for s in sizes)


def test_gpu_and_cpu_pipelines_train_on_the_same_images(jpegs, tmp_path, tiny_overrides):
    """Crop, flip and masking draws come in the same order from the same generator, so the losses agree."""
    cpu = run(jpegs, tmp_path / "cpu", "cpu", tiny_overrides)
    gpu = run(jpegs, tmp_path / "gpu", "gpu", tiny_overrides)
    assert len(cpu) == len(gpu) == 3
    assert gpu == pytest.approx(cpu, rel=1e-4)


def test_a_corrupt_file_stops_the_gpu_path_naming_it_or_is_skipped_and_counted(jpegs, tmp_path, caplog, tiny_overrides):
    bad = tmp_path / "data"
    make_jpeg_folder(bad, images=24, classes=3)
    broken = sorted((bad / "train").glob("*/*.JPEG"))[5]
    broken.write_bytes(b"\xff\xd8\xff" + b"not a jpeg" * 50)
    with pytest.raises(DataError, match=broken.name):
        run(bad, tmp_path / "stop", "gpu", tiny_overrides)
    with caplog.at_level(logging.WARNING):
        run(bad, tmp_path / "skip", "gpu", tiny_overrides, skip_bad_images=True)
    epochs = [json.loads(line) for line in (tmp_path / "skip" / "log.jsonl").read_text().splitlines()]
    assert [r["skipped_images"] for r in epochs if "train_loss" in r] == [1]
    assert broken.name in caplog.text


def test_the_generated_folder_does_not_depend_on_the_number_of_workers(tmp_path):
    one = make_jpeg_folder(tmp_path / "one", images=70, classes=2, workers=0)
    two = make_jpeg_folder(tmp_path / "two", images=70, classes=2, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*.JPEG"))
    assert len(files) == 70 and files == sorted(p.relative_to(two) for p in two.rglob("*.JPEG"))
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
