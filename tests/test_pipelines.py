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
    cfg = PretrainConfig(
        data=str(root),
        output_dir=str(out),
        data_pipeline=pipeline,
        image_size=32,
        model="mae_vit_mini_patch4_32",
        model_overrides=overrides,
        batch_size=8,
        epochs=1,
        num_workers=0,
        log_every=1,
        vis_images=0,
        device="cpu",
        **kw,
    )
    pretrain(cfg)
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "step" in r]


def test_the_generated_folder_looks_like_imagenet(jpegs):
    files = sorted((jpegs / "train").glob("*/*.JPEG"))
    assert len(files) == 24 and len({f.parent.name for f in files}) == 3
    from PIL import Image

    sizes = [Image.open(f).size for f in files]
    assert all(400 <= max(s) <= 600 and abs(min(s) / max(s) - 0.75) < 0.01 for s in sizes)


def test_the_gpu_pipeline_trains_reproducibly_and_resumes_exactly(jpegs, tmp_path, tiny_overrides):
    """The GPU pipeline crops each batch from its own seed (seed, rank, epoch, batch) in a background thread
    that works ahead: the same run twice gives the same losses, and one stopped by Ctrl-C after its first
    step and resumed gives the losses of the uninterrupted run. (Its crops follow the CPU pipeline's
    distribution, and for the same box its pixels: tests/test_gpu_data.py; not its sequence of draws.)"""
    from tests.conftest import recorder

    whole = run(jpegs, tmp_path / "a", "gpu", tiny_overrides)
    assert len(whole) == 3 and whole == run(jpegs, tmp_path / "b", "gpu", tiny_overrides)
    cfg = PretrainConfig(
        data=str(jpegs),
        output_dir=str(tmp_path / "c"),
        data_pipeline="gpu",
        image_size=32,
        model="mae_vit_mini_patch4_32",
        model_overrides=tiny_overrides,
        batch_size=8,
        epochs=1,
        num_workers=0,
        log_every=1,
        vis_images=0,
        device="cpu",
    )
    first, on_step = recorder(stop_at=1)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, on_step=on_step)
    rest, on_step = recorder()
    cfg.resume = "auto"
    pretrain(cfg, on_step=on_step)
    assert first + rest == pytest.approx(whole, rel=1e-6)
    assert len(run(jpegs, tmp_path / "cpu", "cpu", tiny_overrides)) == 3  # the CPU pipeline reads the same folder


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


def test_with_loader_workers_a_mid_epoch_resume_is_exact(jpegs, tmp_path, tiny_overrides):
    """With DataLoader workers, an image folder's crops after a mid-epoch resume used to differ from the
    uninterrupted run's (each worker's stream was seeded per epoch). Each image now draws from its own seed."""
    from tests.conftest import recorder

    def config(out, **kw):
        return PretrainConfig(
            data=str(jpegs),
            output_dir=str(out),
            data_pipeline="cpu",
            image_size=32,
            model="mae_vit_mini_patch4_32",
            model_overrides=tiny_overrides,
            batch_size=4,
            epochs=2,
            num_workers=2,
            log_every=1,
            vis_images=0,
            device="cpu",
            **kw,
        )

    whole, on_step = recorder()
    pretrain(config(tmp_path / "whole"), on_step=on_step)
    first, on_step = recorder(stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config(tmp_path / "part"), on_step=on_step)
    rest, on_step = recorder()
    pretrain(config(tmp_path / "part", resume="auto"), on_step=on_step)
    assert len(whole) == 12 and first + rest == whole
