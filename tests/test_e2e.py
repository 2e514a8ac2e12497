"""The end-to-end benchmark: both pipelines measured against the model-only rate, in one run."""

import contextlib
import time

import pytest
import torch

from mae_course.cli import main
from mae_course.experiments.e2e import EndToEndConfig, e2e_text, end_to_end

DELAY = 0.2  # seconds the slowed pipeline takes per batch of 8: at most 40 images/s


def test_both_pipelines_are_measured_against_the_model(tmp_path, tiny_overrides, monkeypatch):
    """Each pipeline is slowed to one batch per DELAY, so its loader and training rates must stay below
    8 / DELAY = 40 images/s, each measured on the pipeline and not elsewhere; the model alone, on
    synthetic images, is far faster (a step of the tiny model on 8 images takes milliseconds, well under
    DELAY even on a busy machine), so the slowed pipeline cannot keep up with it."""
    from mae_course.experiments import e2e

    real = e2e.pipeline_batches

    def slowed(cfg, pipeline, device):
        with contextlib.closing(real(cfg, pipeline, device)) as batches:
            for batch in batches:
                time.sleep(DELAY)
                yield batch

    monkeypatch.setattr(e2e, "pipeline_batches", slowed)
    cfg = EndToEndConfig(
        generate=32,
        generate_dir=str(tmp_path / "jpegs"),
        model="mae_vit_mini_patch4_32",
        model_overrides=tiny_overrides,
        image_size=32,
        batch_size=8,
        steps=5,
        warmup=1,
        num_workers=0,
        device="cpu",
    )
    results = end_to_end(cfg)
    assert results["suite"] == "e2e"
    assert results["data"]["images"] == 32 and len(list((tmp_path / "jpegs").rglob("*.JPEG"))) == 32
    assert [row["pipeline"] for row in results["rows"]] == ["cpu", "gpu"]
    assert results["model_images_per_s"] > 8 / DELAY
    for row in results["rows"]:
        assert 0 < row["loader_images_per_s"] <= 8 / DELAY and 0 < row["training_images_per_s"] <= 8 / DELAY
        assert row["training_vs_model"] == pytest.approx(row["training_images_per_s"] / results["model_images_per_s"])
        assert row["training_vs_model"] < 1
    assert "of model-only" in e2e_text(results)


def test_the_rate_counts_the_timed_images_over_the_timed_seconds(monkeypatch):
    """On a clock the test moves: the loader takes 0.25 s per batch of 4 and the work 0.75 s, so 5 timed
    batches are 20 images in 5 s, 4 images/s (the 2 warm-up batches neither counted nor timed); with no work,
    the loader's own 16 images/s."""
    from mae_course.experiments.e2e import images_per_s

    clock = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def batches():
        while True:
            clock[0] += 0.25
            yield torch.zeros(4, 3, 2, 2)

    def work(batch):
        clock[0] += 0.75

    cpu = torch.device("cpu")
    assert images_per_s(batches(), work, steps=5, warmup=2, device=cpu) == pytest.approx(4.0)
    assert images_per_s(batches(), lambda b: None, steps=5, warmup=2, device=cpu) == pytest.approx(16.0)


def test_e2e_suite_refuses_several_models():
    assert main(["bench", "--suite", "e2e", "--models", "mae_vit_base_patch16", "mae_vit_large_patch16"]) == 2


def test_no_loader_worker_outlives_its_measurement(tmp_path):
    """Each measurement ends its DataLoader's workers, even while someone still holds its batches
    (the next measurement used to start with the previous one's persistent workers alive)."""
    import multiprocessing

    from mae_course.data.jpeg_folder import make_jpeg_folder
    from mae_course.experiments.e2e import images_per_s, pipeline_batches

    make_jpeg_folder(tmp_path / "jpegs", images=32, workers=0)
    cfg = EndToEndConfig(data=str(tmp_path / "jpegs"), image_size=32, batch_size=4, num_workers=2, device="cpu")
    cpu = torch.device("cpu")
    for pipeline in ("cpu", "gpu"):
        batches = pipeline_batches(cfg, pipeline, cpu)
        assert images_per_s(batches, lambda b: None, steps=3, warmup=1, device=cpu) > 0
        assert multiprocessing.active_children() == [], pipeline
