"""The end-to-end benchmark: both pipelines measured against the model-only rate, in one run."""

import pytest

from mae_course.cli import main
from mae_course.experiments.e2e import EndToEndConfig, e2e_text, end_to_end


def test_both_pipelines_are_measured_against_the_model(tmp_path, tiny_overrides):
    cfg = EndToEndConfig(generate=32, generate_dir=str(tmp_path / "jpegs"), model="mae_vit_mini_patch4_32",
                         model_overrides=tiny_overrides, image_size=32, batch_size=8, steps=5, warmup=1, num_workers=0,
                         device="cpu")  # fmt: skip
    results = end_to_end(cfg)
    assert results["suite"] == "e2e"
    assert results["data"]["images"] == 32 and len(list((tmp_path / "jpegs").rglob("*.JPEG"))) == 32
    assert [row["pipeline"] for row in results["rows"]] == ["cpu", "gpu"]
    for row in results["rows"]:
        # rates, not a race between them: a timed ordering fails on a busy machine (and with the
        # GPU pipeline's thread working ahead, training can keep pace with the loader alone)
        assert row["loader_images_per_s"] > 0 and row["training_images_per_s"] > 0
        assert row["training_vs_model"] == pytest.approx(row["training_images_per_s"] / results["model_images_per_s"])
    assert "of model-only" in e2e_text(results)


def test_e2e_suite_refuses_several_models():
    assert main(["bench", "--suite", "e2e", "--models", "mae_vit_base_patch16", "mae_vit_large_patch16"]) == 2


def test_no_loader_worker_outlives_its_measurement(tmp_path):
    """Each measurement ends its DataLoader's workers, even while someone still holds its batches
    (the next measurement used to start with the previous one's persistent workers alive)."""
    import multiprocessing

    import torch

    from mae_course.data.jpeg_folder import make_jpeg_folder
    from mae_course.experiments.e2e import images_per_s, pipeline_batches

    make_jpeg_folder(tmp_path / "jpegs", images=32, workers=0)
    cfg = EndToEndConfig(data=str(tmp_path / "jpegs"), image_size=32, batch_size=4, num_workers=2, device="cpu")
    cpu = torch.device("cpu")
    for pipeline in ("cpu", "gpu"):
        batches = pipeline_batches(cfg, pipeline, cpu)
        assert images_per_s(batches, lambda b: None, steps=3, warmup=1, device=cpu) > 0
        assert multiprocessing.active_children() == [], pipeline
